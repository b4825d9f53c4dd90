"""Run by ``test_engine.py`` under ``torch.distributed.run --nproc_per_node 2`` (CPU, gloo):
the toy run kind of the engine tests, trained data-parallel into the folder given as argument."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_engine import cfg, toy_kind  # noqa: E402

from tvlens.training.engine import train_run  # noqa: E402

if __name__ == "__main__":
    c = cfg(steps=12)
    train_run(toy_kind("steps"), c, sys.argv[1], {"config": c.to_dict()}, progress=False)
