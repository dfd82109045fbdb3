"""The exception tree: every public error is a SecurityError, and __all__ is complete."""

from __future__ import annotations

import inspect

from security import errors


def test_all_matches_public_exceptions() -> None:
    public = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and not name.startswith("_")
    }
    assert set(errors.__all__) == public


def test_every_error_is_a_security_error_and_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SecurityError), name
        assert name in doc, f"{name} missing from the tree drawing"


def test_refusal_families() -> None:
    assert issubclass(errors.RevokedCertificate, errors.CertificateError)
    assert issubclass(errors.TokenReused, errors.EnrollmentError)
    assert issubclass(errors.ReplayedCommand, errors.CommandRejected)
    assert issubclass(errors.KeyFilePermissionError, errors.KeyStoreError)
