"""The testing kit for backends, importable by a third-party backend's own tests:

- :class:`BackendContract`: the contract suite every backend passes (``contract_models`` fixture);
- :class:`SamplingContract` and :data:`SAMPLING_CONFIGS`: the sampling-conformance suite, one
  list of cases for every backend (``sampling_probabilities`` fixture);
- :class:`ScriptedBackend` / :class:`ScriptedEngine`: a complete backend with no engine, on
  script models written by :func:`write_script_model` (format :data:`SCRIPT_FORMAT`), as
  httpx ships ``MockTransport``;
- :func:`drive_sequences` / :func:`drive_sequence` (a :class:`SequenceRun` each: tokens, reused
  tokens, logprobs), :func:`run_sequence` and :func:`sequence_request`: drive an engine's
  ``open``/``step`` directly.

Only this package imports pytest; the user API never imports it.
"""

from .contract import GREEDY, HAIKU, PHI3_SPECIALS, SAMPLED, SCRIPT_TEXT, BackendContract, ContractModels
from .engines import SequenceRun, drive_sequence, drive_sequences, run_sequence, sequence_request
from .sampling import SAMPLING_CONFIGS, LogitsCase, SamplingContract, sampling_cases
from .scripted import (
    SCRIPT_FORMAT,
    ScriptedBackend,
    ScriptedEngine,
    ScriptedPlugin,
    scripted_generator,
    write_script_model,
)

__all__ = [
    "GREEDY",
    "HAIKU",
    "PHI3_SPECIALS",
    "SAMPLED",
    "SAMPLING_CONFIGS",
    "SCRIPT_FORMAT",
    "SCRIPT_TEXT",
    "BackendContract",
    "ContractModels",
    "LogitsCase",
    "SamplingContract",
    "ScriptedBackend",
    "ScriptedEngine",
    "ScriptedPlugin",
    "SequenceRun",
    "drive_sequence",
    "drive_sequences",
    "run_sequence",
    "sampling_cases",
    "scripted_generator",
    "sequence_request",
    "write_script_model",
]
