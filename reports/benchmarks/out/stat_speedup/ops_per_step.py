"""Top-level aten calls per pivot step of pivoted_qr, old (14caaef, as stat_old.py in the folder given) and new:
the difference between 200 and 100 steps on a 200-column Gram, torch profiler on the CPU."""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path[:0] = [sys.argv[1], "."]
from methods import stat as new  # noqa: E402
import stat_old  # noqa: E402

z = torch.randn(400, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
gram = z.T @ z
for name, qr in (("old", stat_old.pivoted_qr), ("new", new.pivoted_qr)):
    counts = []
    for steps in (100, 200):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            qr(gram, 1, steps)
        counts.append(sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")))
    print(f"{name}: {(counts[1] - counts[0]) / 100:.0f} aten calls a step (views included)")
