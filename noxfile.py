"""Sessions: tests, lint, typecheck, fuzz, bench, load, faults, demo, wheel_demo.

`nox -s tests` is the whole suite (unit, property, integration, end to end).
Benchmarks print figures and assert nothing about speed.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, with branch coverage of sip/ reported."""
    session.install("-e", ".[test]")
    args = session.posargs or ["tests"]
    session.run(
        "pytest",
        "--cov=sip",
        "--cov=pusher_trio",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        *args,
    )
    session.run("coverage", "report", "--include=sip/*", "--fail-under=100")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "sip", "pusher_trio", "tests", "load", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "--strict", "sip", "pusher_trio")


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Time-boxed fuzzing of the parsers (seconds from FUZZ_SECONDS, default 60)."""
    session.install("-e", ".[test]")
    seconds = os.environ.get("FUZZ_SECONDS", "60")
    session.run("python", "-m", "load.fuzz", "--seconds", seconds, *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Parse rates and push rates, next to sipmessage and aioapns in the same run."""
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "load.bench", *session.posargs)


@nox.session(python=PYTHON)
def load(session: nox.Session) -> None:
    """REGISTER storm, wake-up storm and parked calls against a real Kamailio and sipp."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "load.storm", *session.posargs)


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """The hardening battery at full size: bad input, provider faults, crash, overload."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "load.faults", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("pusher-trio", "demo", *session.posargs)


@nox.session(python=PYTHON, reuse_venv=False)
def wheel_demo(session: nox.Session) -> None:
    """`pip install pusher-trio && pusher-trio demo`: build the wheel, install it into this
    fresh environment and run the demo outside the checkout, so only what the wheel
    ships can be imported (CI runs it)."""
    outside = tempfile.mkdtemp(prefix="pusher-trio-wheel-")
    try:
        session.run("python", "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", outside, ".")
        session.install(*glob.glob(os.path.join(outside, "pusher_trio-*.whl")))
        session.chdir(outside)
        session.run(
            "python", "-c",
            "import pusher_trio.standins, sys; p = pusher_trio.standins.__file__;"
            " sys.exit(0 if 'site-packages' in p else f'imported from {p}, not the wheel')",
        )  # fmt: skip
        session.run("pusher-trio", "demo", *session.posargs)
    finally:
        shutil.rmtree(outside, ignore_errors=True)
