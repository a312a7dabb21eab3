#!/usr/bin/env bash
# Fetches the real test data of shared/DATA.md from Debian's registry into $1 (default .cache/data),
# once: photos (wallpapers, puzzle photos), the libjxl "flower" JPEG variants and Fashion-MNIST.
# Then cuts the photos into an ImageNet-like ImageFolder tree (scripts/make_imagenet_like.py).
# Nothing here is committed: several of these files are CC-BY-SA or GPL.
set -euo pipefail
out=${1:-.cache/data}
py=${PYTHON:-.venv/bin/python}
if [ -f "$out/.complete" ]; then exit 0; fi
pkgs=(lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds plasma-workspace-wallpapers
      palapeli-data libjxl-testdata dataset-fashion-mnist)
debs="$out/.debs"; root="$out/.root"
mkdir -p "$debs" "$root" "$out/photos" "$out/flower" "$out/fashion-mnist"
cd "$debs"
if ! apt-get download "${pkgs[@]}" >/dev/null 2>&1; then
  echo "fetch-data: refreshing the apt package lists" >&2
  apt-get update >/dev/null
  apt-get download "${pkgs[@]}" >/dev/null
fi
for f in ./*.deb; do dpkg-deb -x "$f" "../.root"; done
cd - >/dev/null
sh="$root/usr/share"
# Photos: skip the two non-photo lomiri wallpapers (analogpattern*, umang*).
for f in "$sh"/backgrounds/*.jpg; do
  case "$(basename "$f")" in analogpattern*|umang*) continue ;; esac
  cp "$f" "$out/photos/"
done
for f in "$sh"/backgrounds/mate/nature/*.jpg; do cp "$f" "$out/photos/mate-$(basename "$f")"; done
for n in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  img=$(ls "$sh/wallpapers/$n/contents/images/"*.jpg 2>/dev/null | sort -t x -k1,1n | tail -1 || true)
  [ -z "$img" ] && img=$(ls "$sh/wallpapers/$n/contents/images/"* | tail -1)
  cp "$img" "$out/photos/plasma-$n.${img##*.}"
done
for f in "$sh"/palapeli/collection/*.jpg; do cp "$f" "$out/photos/palapeli-$(basename "$f")"; done
cp "$sh"/libjxl-testdata/jxl/flower/*.jpg "$sh"/libjxl-testdata/jxl/flower/flower.png \
   "$sh"/libjxl-testdata/jxl/flower/flower_alpha.png "$out/flower/"
cp "$sh"/libjxl-testdata/jxl/flower/flower_small.rgb.depth16.ppm \
   "$sh"/libjxl-testdata/jxl/flower/flower_small.g.depth8.pgm "$out/flower/" 2>/dev/null || true
cp "$sh"/datasets/fashion-mnist/*-ubyte.gz "$out/fashion-mnist/"
rm -rf "$root" "$debs"
"$py" scripts/make_imagenet_like.py "$out/photos" "$out/imagenet-like" --per-class 200
touch "$out/.complete"
echo "fetch-data: $(ls "$out/photos" | wc -l) photos, $(find "$out/imagenet-like" -name '*.jpg' | wc -l) ImageNet-like files in $out"
