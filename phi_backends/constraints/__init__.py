"""Structured output: constrain what a call may generate (a JSON schema, any JSON, a regular
expression, a grammar, or one string of a list), the same way on every engine.

One matcher in the core, llguidance, masks the tokens the constraint does not allow in the
logits step (:mod:`phi_backends.logits`, step 3) before any engine's sampler reads the row, so
the meaning is the same on llama.cpp, MLX and onnxruntime-genai, batched or alone.
"""

from .mask import ConstraintMask
from .spec import Constraint, ConstraintKind
from .vocabulary import Vocabulary

__all__ = ["Constraint", "ConstraintKind", "ConstraintMask", "Vocabulary"]
