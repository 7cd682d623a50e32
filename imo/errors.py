"""User-facing failures. Each one is raised where the problem is found and caught once in the CLI,
which prints its message as one line and exits non-zero."""


class ImoError(Exception):
    """Base class: the message says what is wrong and what to do."""


class UnknownModelError(ImoError):
    """A model name that is not in the zoo."""


class InvalidModelError(ImoError):
    """An ONNX file that cannot be read, checked or proven."""


class InputShapeError(ImoError):
    """An input whose shape or contents do not match the model."""


class MissingArtifactError(ImoError):
    """A file a step needs (settings, keys, proof, compiled contract) is not there."""


class ProofError(ImoError):
    """A proof failed to generate or did not verify."""


class ChainError(ImoError):
    """The chain is unreachable, or a transaction failed."""


class ToolchainError(ImoError):
    """node/solc/anvil from the npm toolchain is missing or failed."""


class OutputDirError(ImoError):
    """An output directory that cannot be replaced without losing someone's data."""


class UnprovableClaimError(ImoError):
    """A value the circuit cannot hold (outside a lookup table or a range-check decomposition): ezkl can produce no
    witness, so no proof could ever support, or contradict, a claim built on it."""
