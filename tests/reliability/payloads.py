"""Hostile chat templates of the known families, each trying to create a marker file or run a command.

``MARKER`` in a source is replaced by a path that must still not exist after the run. A payload is
either refused (the user gets one line naming the chat template) or, for the last few, rendered
safely to the text given. None of them looks like a family phi-backends knows well enough to be
swapped for a built-in template, except the two "disguised" ones, which test that detection
runs its probes in the sandbox too and does not pick a built-in for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MESSAGES", "PAYLOADS", "PROMPT", "Payload"]

PROMPT = "hi"
MESSAGES = [{"role": "user", "content": PROMPT}]
_RUN = "os.popen('touch MARKER').read()"


@dataclass(frozen=True)
class Payload:
    name: str
    family: str
    what: str
    """The bad input, in words, for docs/bad-inputs.md."""
    source: str
    needle: str = ""
    """Words the one-line refusal must contain (every refusal names the chat template)."""
    renders: str | None = None
    """For a template that must render safely: the prompt text it gives for :data:`MESSAGES`."""
    refused_at_load: bool = False
    """Refused when the template is compiled (at load), not when it is rendered."""
    length: int = 0
    """When set, ``PAD`` in the source is filled so that the template has this many characters
    whatever the marker's path (the refusal quotes the length)."""

    def template(self, marker: Path) -> str:
        text = self.source.replace("MARKER", str(marker))
        return text.replace("PAD", "x" * (self.length - len(text) + 3)) if self.length else text


_UNSAFE = "unsafe operation"
_PHI3_LOOKALIKE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' + '\n' }}{% endif %}"
)
_CHATML_LOOKALIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if messages|length > 1 %}{{ cycler.__init__.__globals__." + _RUN + " }}{% endif %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PAYLOADS: tuple[Payload, ...] = (
    # -- reaching a module's globals (os, sys, builtins) through the objects Jinja exposes
    Payload("template_reference", "__globals__", "chat template reaching os through self._TemplateReference__context",
            "{{ self._TemplateReference__context.cycler.__init__.__globals__." + _RUN + " }}", _UNSAFE),
    Payload("cycler_globals", "__globals__", "chat template running a command through cycler.__init__.__globals__.os",
            "{{ cycler.__init__.__globals__." + _RUN + " }}", _UNSAFE),
    Payload("joiner_globals", "__globals__", "chat template running a command through joiner.__init__.__globals__",
            "{{ joiner.__init__.__globals__['os'].system('touch MARKER') }}", _UNSAFE),
    Payload("namespace_globals", "__globals__", "chat template reaching os through namespace.__init__.__globals__",
            "{{ namespace.__init__.__globals__['sys'].modules['os'].system('touch MARKER') }}", _UNSAFE),
    Payload("lipsum_globals", "__globals__", "chat template reaching os through lipsum.__globals__",
            "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}", "'lipsum' is undefined"),
    Payload("sandbox_globals", "__globals__", "chat template opening a file through range.__globals__",
            "{{ range.__globals__['__builtins__']['open']('MARKER', 'w').write('pwned') }}", _UNSAFE),
    Payload("builtins_import", "__builtins__", "chat template importing os through __builtins__",
            "{{ self.__init__.__globals__['__builtins__']['__import__']('os').system('touch MARKER') }}", _UNSAFE),
    # -- walking the class tree to subprocess.Popen or a module's builtins
    Payload("subclasses_popen", "__subclasses__", "chat template looking for subprocess.Popen in __subclasses__()",
            "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
            "{{ c(['touch', 'MARKER']) }}{% endif %}{% endfor %}", _UNSAFE),
    Payload("cve_2024_34359", "__subclasses__", "chat template of CVE-2024-34359 (llama-cpp-python)",
            "{% for x in ().__class__.__base__.__subclasses__() %}{% if \"warning\" in x.__name__ %}"
            "{{x()._module.__builtins__['__import__']('os').popen(\"touch MARKER\")}}{%endif%}{% endfor %}", _UNSAFE),
    # -- attribute tricks: a filter or a computed name instead of the dotted attribute
    Payload("attr_filter", "attribute tricks", "chat template reaching __globals__ with |attr()",
            "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch MARKER') }}", _UNSAFE),
    Payload("built_attribute_name", "attribute tricks", "chat template building the name '__class__' with ~",
            "{{ ''['__cla' ~ 'ss__']['__mro__'][1]['__subcla' ~ 'sses__']() }}", _UNSAFE),
    # -- format strings read attributes without the sandbox's attribute checks
    Payload("format_method", "format strings", "chat template reading __globals__ through str.format",
            "{{ '{0.__init__.__globals__[os]}'.format(cycler) }}", _UNSAFE),
    Payload("format_map", "format strings", "chat template reading __subclasses__ through str.format_map",
            "{{ '{x.__class__.__mro__[1].__subclasses__}'.format_map({'x': messages}) }}", _UNSAFE),
    Payload("format_filter", "format strings", "chat template passing __globals__ to the |format filter",
            "{{ '%s'|format(cycler.__init__.__globals__." + _RUN + ") }}", _UNSAFE),
    # -- running forever
    Payload("recursive_macro", "recursion", "chat template with a macro that calls itself forever",
            "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "more than 64 deep"),
    Payload("recursive_loop", "recursion", "chat template with a recursive loop over itself",
            "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}", "more than 64 deep"),
    Payload("huge_range", "loops", "chat template looping over range(10**9)",
            "{% for i in range(10**9) %}x{% endfor %}", "more than 100,000 items"),
    Payload("nested_loops", "loops", "chat template with three nested loops of 99,999",
            "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99999) %}{% endfor %}"
            "{% endfor %}{% endfor %}", "more than 1,000,000 loop iterations"),
    Payload("slow_loop", "loops", "chat template looping over slow scans of a 4 MB string",
            "{% set big = 'a' * 3999999 %}{% for i in range(99999) %}{% if 'b' in big %}{% endif %}{% endfor %}",
            "ran for more than 2 s"),
    # -- exhausting memory
    Payload("huge_string", "memory", "chat template building 'a' * 10**10",
            "{{ 'a' * 10**10 }}", "more than 4,000,004 characters"),
    Payload("doubling", "memory", "chat template doubling a string in a loop",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "more than 4,000,004 characters"),
    Payload("kept_values", "memory", "chat template keeping 200 strings of 16 MB in variables",
            "".join("{% set v" + str(i) + " = '\U0001f600' * 3999999 %}" for i in range(200)) + "{{ v0|length }}",
            "built more than 256 MiB"),
    Payload("huge_int", "memory", "chat template computing 2 ** 10**9",
            "{{ 2 ** (10 ** 9) }}", "more than 32,768 bits"),
    # -- refused before it ever runs
    Payload("deep_nesting", "compile", "chat template nesting parentheses 20,000 deep",
            "{{ " + "(" * 20000 + "1" + ")" * 20000 + " }}", "nests too deeply", refused_at_load=True),
    Payload("source_too_long", "compile", "chat template of 300,000 characters",
            "{# PAD #}{{ cycler.__init__.__globals__." + _RUN + " }}", "is 300,000 characters long",
            refused_at_load=True, length=300_000),
    # -- disguised as a family phi-backends recognises: detection renders it in the sandbox too
    Payload("disguised_phi3", "disguised", "Phi-3 look-alike chat template that runs a command",
            _PHI3_LOOKALIKE + "{{ cycler.__init__.__globals__." + _RUN + " }}", _UNSAFE),
    Payload("probe_only", "disguised", "ChatML look-alike chat template whose payload fires on multi-turn chats",
            _CHATML_LOOKALIKE, renders="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    # -- a strange but harmless template is rendered, in the sandbox
    Payload("custom_format", "harmless", "chat template of an unknown format",
            "{% for m in messages %}[{{ m.role|upper }}] {{ m.content }}\n{% endfor %}ANSWER:",
            renders="[USER] hi\nANSWER:"),
)  # fmt: skip
