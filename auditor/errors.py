"""One exception family. The CLI turns each into one line on stderr and an exit code.

Exit codes: 0 clean, 1 findings at or above ``--fail-on``, 2 usage or input error,
3 environment error (no engine reachable, registry down).
"""

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3


class AuditorError(Exception):
    """Base of every error the user should see as one line. ``str(err)`` is that line."""

    exit_code = EXIT_INPUT


class InputError(AuditorError):
    """The reference, the image or a file the user gave is wrong or hostile."""


class ReferenceError_(InputError):
    """A reference that cannot be parsed."""


class DigestMismatchError(InputError):
    """Bytes that do not match the digest they were asked for."""


class PlatformError(InputError):
    """No manifest for the requested platform."""


class NotFoundError(InputError):
    """A tag, digest, repository or file that does not exist."""


class AuthError(InputError):
    """Credentials missing or refused."""


class LimitExceededError(InputError):
    """A layer or file exceeded a safety limit (decompression bombs); the limit can be raised."""


class EnvironmentProblem(AuditorError):
    """Something outside the input is missing: no engine, registry unreachable, cache unusable."""

    exit_code = EXIT_ENVIRONMENT
