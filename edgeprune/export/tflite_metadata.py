"""TFLite Metadata: the model describes itself the way Android tools expect (no tflite-support needed).

Android Studio's ML Model Binding, the TFLite/LiteRT Task Library and the metadata extractor read a
``ModelMetadata`` flatbuffer (``metadata_schema.fbs`` of tflite-support, file identifier ``M001``) that
is stored in one of the model's buffers and named ``TFLITE_METADATA`` in the model's ``metadata``
list; associated files (the labels) are appended to the .tflite as an uncompressed ZIP (what
tflite-support's ``MetadataPopulator`` does; the interpreter ignores the trailing bytes).

tflite-support itself cannot be installed beside our pins (0.4.4 needs protobuf<4; ai-edge-litert and
onnx need protobuf>=5), so this module writes and reads the part of the schema edgeprune fills with the
``flatbuffers`` package: :data:`SCHEMA` lists each table's fields in schema order (a union takes two
slots: its type, then its value). The model itself is rewritten with ai-edge-litert's generated TFLite
schema (``ModelT``), as the populator does.

Metadata is a plain dict with the schema's field names (as tflite-support's ``MetadataDisplayer``
prints them), e.g. ``{"name": ..., "subgraph_metadata": [{"input_tensor_metadata": [...]}]}``; a union
field ``options`` comes with ``options_type`` (the member's name).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import flatbuffers
from flatbuffers import number_types as nt
from flatbuffers.table import Table

from ..errors import InputError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
#: Oldest metadata parser that reads what we write (no field newer than schema 1.0.0 is used).
MIN_PARSER_VERSION = "1.0.0"

#: table -> fields in schema order: (name, kind); kinds: str, [str], [f32], u32, i32, enum:E, union:U, Table, [Table]
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "ModelMetadata": [("name", "str"), ("description", "str"), ("version", "str"),
                      ("subgraph_metadata", "[SubGraphMetadata]"), ("author", "str"), ("license", "str"),
                      ("associated_files", "[AssociatedFile]"), ("min_parser_version", "str")],
    "SubGraphMetadata": [("name", "str"), ("description", "str"), ("input_tensor_metadata", "[TensorMetadata]"),
                         ("output_tensor_metadata", "[TensorMetadata]"), ("associated_files", "[AssociatedFile]"),
                         ("input_process_units", "[ProcessUnit]"), ("output_process_units", "[ProcessUnit]")],
    "TensorMetadata": [("name", "str"), ("description", "str"), ("dimension_names", "[str]"), ("content", "Content"),
                       ("process_units", "[ProcessUnit]"), ("stats", "Stats"),
                       ("associated_files", "[AssociatedFile]")],
    "Content": [("content_properties", "union:ContentProperties"), ("range", "ValueRange")],
    "FeatureProperties": [],
    "ImageProperties": [("color_space", "enum:ColorSpaceType"), ("default_size", "ImageSize")],
    "ImageSize": [("width", "u32"), ("height", "u32")],
    "ValueRange": [("min", "i32"), ("max", "i32")],
    "ProcessUnit": [("options", "union:ProcessUnitOptions")],
    "NormalizationOptions": [("mean", "[f32]"), ("std", "[f32]")],
    "Stats": [("max", "[f32]"), ("min", "[f32]")],
    "AssociatedFile": [("name", "str"), ("description", "str"), ("type", "enum:AssociatedFileType"),
                       ("locale", "str"), ("version", "str")],
}  # fmt: skip
ENUMS = {
    "ColorSpaceType": ("UNKNOWN", "RGB", "GRAYSCALE"),
    "AssociatedFileType": ("UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS",
                           "TENSOR_AXIS_SCORE_CALIBRATION", "VOCABULARY", "SCANN_INDEX_FILE"),
}  # fmt: skip
UNIONS = {  # member index = position (0 = NONE); members not in SCHEMA are read as None
    "ContentProperties": ("NONE", "FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties"),
    "ProcessUnitOptions": ("NONE", "NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions",
                           "BertTokenizerOptions", "SentencePieceTokenizerOptions", "RegexTokenizerOptions"),
}  # fmt: skip


def _slots(table: str) -> list[tuple[str, str, int]]:
    """(field, kind, vtable slot) of ``table``: a union's type is in the slot before its value."""
    out, slot = [], 0
    for name, kind in SCHEMA[table]:
        if kind.startswith("union:"):
            slot += 1
        out.append((name, kind, slot))
        slot += 1
    return out


# ----------------------------------------------------------------------------------- writing


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _build(b: flatbuffers.Builder, table: str, data: dict) -> int:
    allowed = {f for f, _ in SCHEMA[table]} | {f"{f}_type" for f, k in SCHEMA[table] if k.startswith("union:")}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{table} has no field(s) {sorted(unknown)}")
    fields = _slots(table)
    refs: dict[str, int] = {}  # children first: a flatbuffer table cannot be built while another is open
    for name, kind, _ in fields:
        v = data.get(name)
        if v is None:
            continue
        if kind == "str":
            refs[name] = b.CreateString(str(v))
        elif kind == "[str]":
            refs[name] = _vector(b, [b.CreateString(str(s)) for s in v])
        elif kind == "[f32]":
            b.StartVector(4, len(v), 4)
            for x in reversed(v):
                b.PrependFloat32(float(x))
            refs[name] = b.EndVector()
        elif kind.startswith("["):
            refs[name] = _vector(b, [_build(b, kind[1:-1], item) for item in v])
        elif kind.startswith("union:"):
            refs[name] = _build(b, data[f"{name}_type"], v)
        elif kind in SCHEMA:
            refs[name] = _build(b, kind, v)
    b.StartObject(fields[-1][2] + 1 if fields else 0)
    for name, kind, slot in fields:
        v = data.get(name)
        if v is None:
            continue
        if kind.startswith("enum:"):
            b.PrependInt8Slot(slot, ENUMS[kind[5:]].index(v), 0)
        elif kind == "u32":
            b.PrependUint32Slot(slot, int(v), 0)
        elif kind == "i32":
            b.PrependInt32Slot(slot, int(v), 0)
        else:
            if kind.startswith("union:"):
                b.PrependUint8Slot(slot - 1, UNIONS[kind[6:]].index(data[f"{name}_type"]), 0)
            b.PrependUOffsetTRelativeSlot(slot, refs[name], 0)
    return b.EndObject()


def pack_metadata(metadata: dict) -> bytes:
    """A ``ModelMetadata`` dict -> the flatbuffer bytes (identifier ``M001``)."""
    b = flatbuffers.Builder(1024)
    b.Finish(_build(b, "ModelMetadata", metadata), file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


# ----------------------------------------------------------------------------------- reading


def _read(buf: bytes, pos: int, table: str) -> dict:
    t = Table(buf, pos)
    out: dict[str, Any] = {}
    for name, kind, slot in _slots(table):
        o = t.Offset(4 + 2 * slot)
        if not o:
            continue
        at = o + t.Pos
        if kind == "str":
            out[name] = t.String(at).decode("utf-8")
        elif kind.startswith("enum:"):
            out[name] = ENUMS[kind[5:]][t.Get(nt.Int8Flags, at)]
        elif kind in ("u32", "i32"):
            out[name] = t.Get(nt.Uint32Flags if kind == "u32" else nt.Int32Flags, at)
        elif kind.startswith("["):
            start, n = t.Vector(o), t.VectorLen(o)
            if kind == "[f32]":
                out[name] = [t.Get(nt.Float32Flags, start + 4 * i) for i in range(n)]
            elif kind == "[str]":
                out[name] = [t.String(start + 4 * i).decode("utf-8") for i in range(n)]
            else:
                out[name] = [_read(buf, t.Indirect(start + 4 * i), kind[1:-1]) for i in range(n)]
        elif kind.startswith("union:"):
            to = t.Offset(4 + 2 * (slot - 1))
            member = UNIONS[kind[6:]][t.Get(nt.Uint8Flags, to + t.Pos) if to else 0]
            out[f"{name}_type"] = member
            out[name] = _read(buf, t.Indirect(at), member) if member in SCHEMA else None
        else:
            out[name] = _read(buf, t.Indirect(at), kind)
    return out


def unpack_metadata(buf: bytes) -> dict:
    """``ModelMetadata`` flatbuffer bytes -> dict (the fields of :data:`SCHEMA` that are set)."""
    buf = bytes(buf)
    if len(buf) < 8 or buf[4:8] != METADATA_IDENTIFIER:
        raise InputError(f"not a TFLite ModelMetadata flatbuffer (identifier {buf[4:8]!r}, "
                         f"want {METADATA_IDENTIFIER!r})")
    return _read(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0), "ModelMetadata")


# ----------------------------------------------------------------------------------- the model file


def _schema():
    from ai_edge_litert import schema_py_generated as fb  # the TFLite model schema, shipped with ai-edge-litert

    return fb


def embed(model: bytes, metadata: dict, files: dict[str, bytes] | None = None) -> bytes:
    """``model`` (.tflite bytes) with ``metadata`` as its TFLITE_METADATA buffer and ``files`` (name -> bytes)
    appended as an uncompressed ZIP. Metadata or files already in ``model`` are replaced."""
    fb = _schema()
    if len(model) < 8 or bytes(model[4:8]) != TFLITE_IDENTIFIER:
        raise InputError("not a .tflite flatbuffer (no TFL3 identifier); embed metadata into an exported .tflite file")
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if any((buf.offset or 0) > 1 for buf in (m.buffers or [])):
        raise InputError("this .tflite keeps its weights outside the flatbuffer (buffer offsets); re-export it "
                         "without external buffers to embed metadata")  # fmt: skip
    blob = fb.BufferT()
    blob.data = list(pack_metadata(metadata))
    m.buffers = list(m.buffers or [])
    m.metadata = list(m.metadata or [])
    existing = [e for e in m.metadata if e.name in (METADATA_NAME, METADATA_NAME.encode())]
    if existing:
        m.buffers[existing[0].buffer] = blob
    else:
        m.buffers.append(blob)
        entry = fb.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(m.buffers) - 1
        m.metadata.append(entry)
    b = flatbuffers.Builder(len(model) + 4096)
    b.Finish(m.Pack(b), file_identifier=TFLITE_IDENTIFIER)
    out = io.BytesIO(bytes(b.Output()))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:  # the extractor reads stored files only
            for name, data in files.items():
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def io_tensor_names(model: bytes) -> tuple[str, str]:
    """Names of the first input and the first output tensor of the main subgraph of a .tflite file."""
    m = _schema().Model.GetRootAs(bytes(model), 0)
    g = m.Subgraphs(0)
    return g.Tensors(g.Inputs(0)).Name().decode("utf-8"), g.Tensors(g.Outputs(0)).Name().decode("utf-8")


def output_tensor_names(model: bytes) -> list[str]:
    """Names of every output tensor of the main subgraph, in the subgraph's order."""
    g = _schema().Model.GetRootAs(bytes(model), 0).Subgraphs(0)
    return [g.Tensors(g.Outputs(i)).Name().decode("utf-8") for i in range(g.OutputsLength())]


def read_model_metadata(model: bytes) -> tuple[dict | None, dict[str, bytes]]:
    """(metadata dict or None, associated files name -> bytes) of a .tflite file's bytes."""
    fb = _schema()
    model = bytes(model)
    m = fb.Model.GetRootAs(model, 0)
    meta = None
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            meta = unpack_metadata(m.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
    except zipfile.BadZipFile:
        pass
    return meta, files


# ----------------------------------------------------------------------------------- what a bundle writes


def classifier_metadata(*, name: str, description: str, version: str, author: str, layout: str, shape: list,
                        dtype: str, raw_mean: list[float], raw_std: list[float], raw_max: float,
                        color_mode: str | None, output_shape: list, output_description: str,
                        labels_file: str | None, input_tensor: str, output_tensor: str) -> dict:
    """The ModelMetadata of one bundled model (one input, one output).

    The input's NormalizationOptions take raw values as stored (0..``raw_max``: pixels 0-255, digits'
    counts 0-16) to what training fed the network, ``(raw - raw_mean) / raw_std``, the same for the
    fp32 and the INT8 file (the schema's convention: a quantized model shares its float model's
    normalization, and its input tensor's own scale/zero point quantize the normalized value).
    ``stats`` hold the input's value range: the normalized range for float input, the integer range
    for INT8. An NHWC image input is marked as an image (ImageProperties: colour space, size); an
    NCHW one as a feature tensor, because the image paths of the Task Library read NHWC only.
    """
    channels = int(shape[-1] if layout == "NHWC" else shape[1]) if len(shape) > 1 else 1
    if layout == "NHWC" and len(shape) == 4:
        space = {"L": "GRAYSCALE", "RGB": "RGB"}.get(color_mode or ("L" if channels == 1 else "RGB"), "UNKNOWN")
        content = {"content_properties_type": "ImageProperties",
                   "content_properties": {"color_space": space, "default_size": {"width": int(shape[2]),
                                                                                  "height": int(shape[1])}}}
    else:
        content = {"content_properties_type": "FeatureProperties", "content_properties": {}}
    if dtype == "float32":
        stats = {"min": [(0.0 - m) / s for m, s in zip(raw_mean, raw_std)],
                 "max": [(raw_max - m) / s for m, s in zip(raw_mean, raw_std)]}
    else:
        stats = {"min": [-128.0 if dtype == "int8" else 0.0], "max": [127.0 if dtype == "int8" else 255.0]}
    dims = {"NCHW": ["batch", "channel", "height", "width"], "NHWC": ["batch", "height", "width", "channel"]}
    inp = {
        "name": "input",
        "description": f"{layout} {list(shape)} {dtype} (tensor {input_tensor}): raw values 0..{raw_max:g} "
                       f"normalized as (raw - mean) / std" + (", then quantized with the tensor's scale and zero point"
                                                             if dtype != "float32" else "") + ".",
        "dimension_names": dims.get(layout) if len(shape) == 4 else None,
        "content": content,
        "process_units": [{"options_type": "NormalizationOptions",
                           "options": {"mean": [float(v) for v in raw_mean], "std": [float(v) for v in raw_std]}}],
        "stats": stats,
    }
    out = {"name": "scores" if labels_file else "output",
           "description": f"{list(output_shape)} (tensor {output_tensor}): {output_description}",
           "content": {"content_properties_type": "FeatureProperties", "content_properties": {}}}
    if labels_file:
        out["associated_files"] = [{"name": labels_file, "description": "Class names, one per line, in output index "
                                                                         "order.", "type": "TENSOR_AXIS_LABELS"}]
    return {
        "name": name, "description": description, "version": version, "author": author,
        "subgraph_metadata": [{"input_tensor_metadata": [inp], "output_tensor_metadata": [out]}],
        "min_parser_version": MIN_PARSER_VERSION,
    }  # fmt: skip
