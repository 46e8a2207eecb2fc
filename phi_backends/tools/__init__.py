"""Tool calling: function definitions in, :class:`ToolCall` s out, the same on every engine.

- :mod:`.definitions`: the tools and the ``tool_choice`` a caller gives, checked once;
- :mod:`.calls`: :class:`ToolCall`, parsed from the model's text and written back into a conversation;
- :mod:`.markup`: how each model family writes tools (Phi-4-mini's tokens; the convention for the rest);
- :mod:`.reader`: the calls read out of a call's text as it streams;
- :mod:`.plan`: one call's setup, with the constraint that enforces ``required`` or a named function.
"""

from .calls import ToolCall
from .definitions import Tool, ToolChoice, check_tool_choice, check_tools
from .markup import CONVENTION, PHI4_MINI, ToolMarkup
from .plan import ToolPlan, plan_tools
from .reader import ToolCallReader

__all__ = [
    "CONVENTION",
    "PHI4_MINI",
    "Tool",
    "ToolCall",
    "ToolCallReader",
    "ToolChoice",
    "ToolMarkup",
    "ToolPlan",
    "check_tool_choice",
    "check_tools",
    "plan_tools",
]
