// Counts heap allocations made through the global operator new (all forms) in a test
// binary that links alloc_counter.cc, which replaces them. Link it into its own
// executable: the replacement applies to the whole program.
#pragma once
#include <cstdint>

// Allocations since the program started (every thread).
int64_t g4_test_allocations();
