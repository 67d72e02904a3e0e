//! GPUs seen through the CUDA driver API (cudarc, loaded dynamically); "no GPU" when there is no driver.
