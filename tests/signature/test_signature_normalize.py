"""Frame normalization: known cases, and Hypothesis for totality and idempotence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.signature import address_frame, normalize_function
from corecensus.signature.demangle import demangle
from corecensus.signature.normalize import drop_prefix_and_return_type


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("static void* Foo<Bar, Baz<int>>::get(int, char*) const", "Foo<T>::get"),
        (
            "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>"
            "(__gnu_cxx::__normal_iterator<int*, std::vector<int> >, int const&)",
            "std::vector<T>::_M_realloc_insert<T>",
        ),
        ("(anonymous namespace)::parse(char const*)", "(anonymous namespace)::parse"),
        ("`anonymous namespace'::parse", "(anonymous namespace)::parse"),
        ("Foo::operator()(int) const", "Foo::operator()"),
        ("bool operator<(A const&, B const&)", "operator<"),
        ("operator new(unsigned long)", "operator new"),
        ("Server::$_12::operator()() const", "Server::$::operator()"),
        ("int main(int, char**)", "main"),
        ("Foo<T>::~Foo()", "Foo<T>::~Foo"),
        ("Foo::bar() &&", "Foo::bar"),
        # GCC clones of one function are that function.
        ("parse_header.isra.0", "parse_header"),
        ("parse_header.part.3.constprop.0", "parse_header"),
        ("handle() [clone .cold]", "handle"),
        # Symbol offsets and ELF symbol versions are not part of the name.
        ("crash_here+0x1a/0x40", "crash_here"),
        ("memcpy@@GLIBC_2.14", "memcpy"),
        # glibc's internal aliases are the function itself.
        ("__GI___libc_free", "__libc_free"),
        ("__GI_raise", "raise"),
        # Mangled names are demangled with libstdc++'s __cxa_demangle.
        ("_ZN3svc7Handler3runEv", "svc::Handler::run"),
        ("_ZSt20__throw_length_errorPKc+0x10", "std::__throw_length_error"),
        ("_Znwm", "operator new"),
        ("_ZN4core9panicking5panic17h0123456789abcdefE", "core::panicking::panic"),
        # Control characters are damage; words before the name are a return type.
        ("  unsigned   long\tname\x00 ", "name"),
        ("", ""),
    ],
)
def test_known_normalizations(raw: str, normalized: str) -> None:
    assert normalize_function(raw) == normalized


def test_drop_prefix_keeps_the_name_with_its_arguments() -> None:
    assert drop_prefix_and_return_type("static void * Alloc<X>::malloc (unsigned)") == (
        "Alloc<X>::malloc (unsigned)"
    )


@pytest.mark.parametrize(
    ("module", "offset", "pc", "text"),
    [
        ("/usr/lib/libfoo.so.1", 0x1A2B, 0x7F00_0000_1A2B, "libfoo.so.1@0x1a2b"),
        (None, None, 0, "@0x0"),
        (None, None, 0xDEAD, "@0xdead"),
        ("libbar.so", None, 0x10, "@0x10"),
    ],
)
def test_address_frames(module: str | None, offset: int | None, pc: int, text: str) -> None:
    assert address_frame(module, offset, pc) == text


def test_demangle_leaves_other_names_alone() -> None:
    assert demangle("main") == "main"
    assert demangle("_Znot a symbol") == "_Znot a symbol"
    assert demangle("_Z" + "P" * 100_000 + "v") == "_Z" + "P" * 100_000 + "v"


# C++-ish fragments so Hypothesis reaches templates, argument lists and operators, not only
# random text.
_FRAGMENTS = st.sampled_from(
    [
        "<", ">", "(", ")", "[", "]", "{", "}", "::", " ", ",", "*", "&", "&&", "const",
        "operator", "operator<", "operator()", "`anonymous namespace'", "(anonymous namespace)",
        "$_1", "[clone .cold]", ".isra.0", ".cold", "+0x1f", "/0x20", "@@GLIBC_2.2.5", "_Z",
        "_ZN3foo3barEv", "std", "vector", "int", "foo", "h0123456789abcdef", "noexcept", "`", "'",
    ]
)  # fmt: skip
_CPPISH = st.lists(_FRAGMENTS, max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), _CPPISH))
def test_normalize_never_raises_and_is_idempotent(text: str) -> None:
    once = normalize_function(text)
    assert isinstance(once, str)
    assert normalize_function(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200).map(lambda s: "_Z" + s))
def test_demangle_never_raises_on_hostile_symbols(text: str) -> None:
    assert isinstance(demangle(text), str)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=80)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)),
    st.integers(min_value=0, max_value=2**64 - 1),
)
def test_address_frame_is_total(module: str | None, offset: int | None, pc: int) -> None:
    text = address_frame(module, offset, pc)
    assert "@0x" in text
    assert text.isprintable()
