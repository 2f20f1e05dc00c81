"""Normalize frame names so that crashes in the same code get the same text.

Follows the C/C++ rules of Mozilla's signature generator (socorro ``signature/rules.py``
``CSignatureTool.normalize_cpp_function`` and ``signature/utils.py``): demangle, drop the return
type and prefix, collapse template arguments to ``<T>``, drop parameter lists and cv/ref
qualifiers, number lambdas alike, drop compiler clone suffixes. An address-only frame becomes
``module@0xoffset``.

Every function here is total (never raises on any ``str``) and idempotent
(``f(f(x)) == f(x)``); both are checked with Hypothesis.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

from corecensus.signature.demangle import demangle

__all__ = [
    "address_frame",
    "collapse",
    "drop_prefix_and_return_type",
    "normalize_function",
]

# Printable ASCII only: symbol names are ASCII after demangling, and anything else is damage
# (socorro ``drop_bad_characters``). Whitespace runs collapse to one space.
_BAD_CHARS = re.compile(r"[^\x20-\x7e]+")
_SPACES = re.compile(r" {2,}")
# drgn / addr2line style "name+0x1a/0x40" or "name+0x1a": the offset is not part of the name.
_SYMBOL_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?$")
# glibc's internal aliases of its own functions (hidden_def in include/libc-symbols.h) are
# named "__GI_" + name: "__GI_raise" is raise, "__GI___libc_free" is __libc_free.
_GLIBC_INTERNAL = re.compile(r"^(?:__GI_)+(?=.)")
# ELF symbol versions ("memcpy@@GLIBC_2.14", "memcpy@GLIBC_2.2.5").
_SYMBOL_VERSION = re.compile(r"@@?[A-Za-z_][A-Za-z0-9_.]*$")
# GCC clones of one function get suffixes ("foo.cold", "foo.isra.0", "foo.part.3",
# "foo.constprop.0", "foo.lto_priv.0", "foo.localalias"); demangled, they read
# "foo() [clone .cold]". All are the same source function. socorro strips "[clone .cold...]"
# (bug 1397926); we strip every clone kind for the same reason.
_CLONE_SUFFIX = re.compile(
    r"(?:\.(?:cold|hot|isra|part|constprop|lto_priv|localalias|llvm)(?:\.\d+)?)+$"
)
_CLONE_BRACKET = re.compile(r"\s*\[clone [^\]]*\]")
# Clang numbers lambdas "$_3"; the number changes with unrelated edits (socorro bug 1688249).
_LAMBDA_NUMBER = re.compile(r"\$_\d+")
# Rust legacy-mangling hash "::h0123456789abcdef".
_RUST_HASH = re.compile(r"::h[0-9a-fA-F]{16}$")
_SPACE_BEFORE = re.compile(r" +(?=[*&,])")
_COMMA_NO_SPACE = re.compile(r",(?! )")
_QUALIFIERS = ("const&&", "const&", "const", "volatile", "noexcept", "&&", "&")


def _clean(text: str) -> str:
    text = _BAD_CHARS.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _enclosed(text: str, opening: str, closing: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each outermost ``opening ... closing`` span; an unclosed one runs to the
    end of the text."""
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == opening:
            if depth == 0:
                start = i
            depth += 1
        elif char == closing and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, i + 1
    if depth:
        yield start, len(text)


def collapse(
    text: str,
    opening: str,
    closing: str,
    replace: Callable[[str, str], str],
) -> str:
    """Replace each outermost ``opening ... closing`` span by ``replace(before, span)``."""
    out: list[str] = []
    previous = 0
    for start, end in _enclosed(text, opening, closing):
        out.append(text[previous:start])
        out.append(replace(text[:start], text[start:end]))
        previous = end
    out.append(text[previous:])
    return "".join(out)


def _template_replacement(before: str, span: str) -> str:
    # "operator<" / "operator<<" / "operator<=" are names, not templates.
    if before.endswith("operator") or before.endswith("operator<"):
        return span
    if span == "<name omitted>" or " in " in span or span.startswith("<unknown"):
        return span
    return "<T>"


def _argument_replacement(before: str, span: str) -> str:
    if span == "(anonymous namespace)" or before.endswith("operator"):
        return span
    return ""


def drop_prefix_and_return_type(function: str) -> str:
    """``static void* Foo<Bar>::get(int) const`` -> ``Foo<Bar>::get(int) const``.

    Tokenizes on spaces outside ``() {} [] <> `'`` and keeps the last token, re-joining a trailing
    ``(args)`` or ``[clone ...]`` token that a space separated from the name (socorro
    ``utils.drop_prefix_and_return_type``).
    """
    pairs = {"(": ")", "{": "}", "[": "]", "<": ">", "`": "'"}
    closers = set(pairs.values())
    tokens: list[str] = []
    levels: list[str] = []
    current: list[str] = []
    for char in function:
        if char in pairs:
            levels.append(char)
            current.append(char)
        elif char in closers:
            if levels and pairs[levels[-1]] == char:
                levels.pop()
            current.append(char)
        elif char == " " and not levels:
            if current:
                tokens.append("".join(current))
            current = []
        else:
            current.append(char)
    if current:
        tokens.append("".join(current))
    if not tokens:
        return ""
    while len(tokens) > 1 and tokens[-1].startswith(("(", "[clone", "const", "&", "noexcept")):
        tokens = [*tokens[:-2], " ".join(tokens[-2:])]
    return tokens[-1]


def _strip_qualifiers(function: str) -> str:
    changed = True
    while changed:
        changed = False
        for qualifier in _QUALIFIERS:
            if function.endswith(qualifier) and function != qualifier:
                head = function[: -len(qualifier)]
                # Only a qualifier after the parameter list or a space, not "foo_const".
                if qualifier[0] == "&" or head.endswith((" ", ")")):
                    function = head.rstrip()
                    changed = True
    return function


def _normalize_once(function: str) -> str:
    function = _clean(function)
    function = _SYMBOL_OFFSET.sub("", function)
    function = _SYMBOL_VERSION.sub("", function)
    function = _GLIBC_INTERNAL.sub("", function)
    function = _clean(demangle(function))
    function = _CLONE_BRACKET.sub("", function)
    function = _strip_qualifiers(function)
    function = function.replace("`anonymous namespace'", "(anonymous namespace)")
    if "::operator" not in function and not function.startswith("operator"):
        function = drop_prefix_and_return_type(function)
    function = _LAMBDA_NUMBER.sub("$", function)
    function = collapse(function, "<", ">", _template_replacement)
    function = collapse(function, "(", ")", _argument_replacement)
    function = _strip_qualifiers(_clean(function))
    function = _CLONE_SUFFIX.sub("", function)
    function = _RUST_HASH.sub("", function)
    function = _SPACE_BEFORE.sub("", function)
    function = _COMMA_NO_SPACE.sub(", ", function)
    return _clean(function)


@functools.lru_cache(maxsize=1 << 16)
def normalize_function(function: str) -> str:
    """Normalize one function name (demangled or not); ``""`` if nothing is left.

    Cached: a fleet's crashes repeat the same few thousand function names.
    The steps are applied until the text stops changing (at most a few rounds: each round only
    removes text or reformats separators), which makes the function idempotent by construction
    even for hostile input such as unbalanced brackets.
    """
    previous = function
    for _ in range(8):
        current = _normalize_once(previous)
        if current == previous:
            return current
        previous = current
    return previous


def address_frame(module: str | None, offset: int | None, pc: int) -> str:
    """The text of a frame without a function name.

    ``libfoo.so@0x1a2b`` (module basename and module-relative offset) when the module is known,
    else ``@0x<pc>``; pc 0 (a jump to NULL) is ``@0x0``.
    """
    if module and offset is not None:
        base = module.rsplit("/", 1)[-1] or module
        return f"{_clean(base)}@0x{offset:x}"
    return f"@0x{pc:x}"
