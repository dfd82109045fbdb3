"""Thing models: the shared language of the edge agent and the cloud registry.

The names most callers need are re-exported here; each lives in a module with one job:

- :mod:`thing_models.model`: the canonical data model (frozen dataclasses)
- :mod:`thing_models.errors`: the exception tree
- :mod:`thing_models.yaml_format`: our YAML format, read with located errors and written back
- :mod:`thing_models.composition`: ``extends`` and components resolved into a flat model
- :mod:`thing_models.telemetry`: the compiled validator of property reports, events and services
- :mod:`thing_models.messages`: the canonical message envelope (JSON and protobuf forms)
- :mod:`thing_models.diff`: change classification and the semantic-version check
- :mod:`thing_models.formats`: Alibaba TSL and W3C WoT conversion, format detection
"""

from thing_models.composition import FolderModelSource, MemoryModelSource, ModelSource, flatten
from thing_models.diff import ModelDiff, Severity, check_version_bump, diff_models
from thing_models.errors import (
    ConversionError,
    Diagnostic,
    HostileInputError,
    MessageError,
    ModelLoadError,
    SourceLocation,
    TelemetryValidationError,
    ThingModelError,
    UnresolvedReferenceError,
    VersionBumpError,
)
from thing_models.messages import Message, MessageKind, Quality
from thing_models.model import (
    Access,
    Bindings,
    CallType,
    Component,
    DataSchema,
    DataType,
    EnumValue,
    Event,
    EventLevel,
    Field,
    ModelRef,
    Property,
    SemVer,
    Service,
    ThingModel,
)
from thing_models.telemetry import Issue, ModelValidator, compile_validator
from thing_models.yaml_format import (
    dump_model_yaml,
    load_model_file,
    load_model_text,
    model_from_dict,
    model_to_dict,
)

__all__ = [
    "Access",
    "Bindings",
    "CallType",
    "Component",
    "ConversionError",
    "DataSchema",
    "DataType",
    "Diagnostic",
    "EnumValue",
    "Event",
    "EventLevel",
    "Field",
    "FolderModelSource",
    "HostileInputError",
    "Issue",
    "MemoryModelSource",
    "Message",
    "MessageError",
    "MessageKind",
    "ModelDiff",
    "ModelLoadError",
    "ModelRef",
    "ModelSource",
    "ModelValidator",
    "Property",
    "Quality",
    "SemVer",
    "Service",
    "Severity",
    "SourceLocation",
    "TelemetryValidationError",
    "ThingModel",
    "ThingModelError",
    "UnresolvedReferenceError",
    "VersionBumpError",
    "check_version_bump",
    "compile_validator",
    "diff_models",
    "dump_model_yaml",
    "flatten",
    "load_model_file",
    "load_model_text",
    "model_from_dict",
    "model_to_dict",
]
