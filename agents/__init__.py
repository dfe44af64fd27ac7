"""Agents: every applicable Stable-Baselines3 / sb3-contrib algorithm, and gentwin's
diffusion-policy actor-critic, behind one name -> class registry."""

from gentwin.agents.registry import ALGORITHMS, algorithm_supports, get_algorithm

__all__ = ["ALGORITHMS", "algorithm_supports", "get_algorithm"]
