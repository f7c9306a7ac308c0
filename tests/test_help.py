"""Every argument of the TensorFlow-free verbs says what it does in --help."""

import argparse
import importlib

import pytest


class _Parser(Exception):
    pass


@pytest.mark.parametrize("verb", ["evaluate", "bench", "predict", "robustness", "edgetpu"])
def test_every_argument_has_help(verb, monkeypatch):
    def capture(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parser) as info:
        importlib.import_module(f"tfdefakeq.{verb}").parse_args([])
    parser = info.value.args[0]
    silent = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert silent == []
