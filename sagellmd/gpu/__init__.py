"""GPUs: inventory (NVML or simulated), memory estimates, placement."""
