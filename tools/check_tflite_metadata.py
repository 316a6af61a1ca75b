#!/usr/bin/env python3
"""Cross-check a bundle's .tflite with Google's own metadata reader (tflite-support), not ours.

tflite-support cannot live in edgeprune's environment (0.4.4 pins protobuf<4 and needs numpy<2), so run this
in a separate virtual environment:

    python3.11 -m venv /tmp/tfls && /tmp/tfls/bin/pip install tflite-support==0.4.4 "numpy<2"
    /tmp/tfls/bin/python tools/check_tflite_metadata.py runs/<run>/dist/<target>/model.int8.tflite

It prints the metadata JSON as tflite-support's MetadataDisplayer reads it, the packed files, the minimum
parser version tflite-support computes for the metadata, and exits 1 if the labels cannot be read back.
"""

import json
import sys


def main(path: str) -> int:
    from tflite_support import metadata
    from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version as version

    shown = metadata.MetadataDisplayer.with_model_file(path)
    md = json.loads(shown.get_metadata_json())
    files = shown.get_packed_associated_file_list()
    print(json.dumps(md, indent=2))
    print("packed files:", files)
    print("min parser version (tflite-support):", version.GetMinimumMetadataParserVersion(shown.get_metadata_buffer()),
          "recorded:", md.get("min_parser_version"))
    labels = [a["name"] for t in md["subgraph_metadata"][0]["output_tensor_metadata"]
              for a in t.get("associated_files", []) if a.get("type") == "TENSOR_AXIS_LABELS"]
    ok = all(name in files and shown.get_associated_file_buffer(name) for name in labels)
    print("labels readable:", ok, labels)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
