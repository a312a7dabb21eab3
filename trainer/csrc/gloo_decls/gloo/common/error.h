// Declarations only (see ../../README.md): nothing of gloo's error types is named by the shim.
#pragma once
