"""The machine and the process a measurement runs in: device, CPU threads, seeds and
environment fields, the ranks under torchrun, progress on the terminal."""
