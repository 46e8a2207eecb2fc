"""The testing kit for backends: the contract suite every backend passes, importable by a
third-party backend's own tests (``from phi_backends.testing import BackendContract``)."""

from .contract import GREEDY, HAIKU, PHI3_SPECIALS, SAMPLED, SCRIPT_TEXT, BackendContract, ContractModels

__all__ = ["GREEDY", "HAIKU", "PHI3_SPECIALS", "SAMPLED", "SCRIPT_TEXT", "BackendContract", "ContractModels"]
