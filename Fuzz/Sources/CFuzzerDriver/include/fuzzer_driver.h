#ifndef AETHER_FUZZER_DRIVER_H
#define AETHER_FUZZER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry point for programs that have their own main (compiler-rt's FuzzerDriver.cpp).
// SwiftPM links every executable with `main` aliased to `<module>_main`, so each fuzz target defines
// that function and hands its arguments and its test function to libFuzzer here.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
