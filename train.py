#!/usr/bin/env python
"""Train and compare agents on gentwin environments.

    python train.py                                   # short default run, prints a table
    python train.py --env gentwin/AspSelection-v0 --algo ppo --timesteps 100000 --n-envs 16 --seed 0
    python train.py evaluate --algo ppo --model runs/AspSelection-v0/ppo/seed0/model.zip
    python train.py --help

The command line is gentwin.cli (one module per subcommand under gentwin/cli/); it calls the
library (gentwin.training, gentwin.compare, gentwin.sweep, gentwin.rllib).
"""

from gentwin.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
