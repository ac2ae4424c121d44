"""Measurements of steps and of the harness itself: interleaved step ratios, the runner's
overhead, profiler traces and their phase summary, the cost of reporting a paper-size run."""
