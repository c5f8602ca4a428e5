"""How a network runs: precision and BatchNorm folding, the bf16 conv guard, the CPU allocator setting."""
