"""gentwin: reinforcement-learning environments for generative-AI-driven digital twins.

``import gentwin`` registers every environment with Gymnasium under the
``gentwin/`` namespace; ``gym.make("gentwin:gentwin/AspSelection-v0")`` does the
import for you.
"""

from gentwin.envs import register_all as _register_all

__version__ = "0.1.0"

_register_all()
