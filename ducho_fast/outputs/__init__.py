"""Reading what a run wrote (compact, parquet, Ducho's layout) back: for `handoff` and
`inspect`, which must work on any output the tool writes, from the files alone."""

from ducho_fast.outputs.read import FeatureSet, find_outputs, load_features, read_output

__all__ = ["FeatureSet", "find_outputs", "load_features", "read_output"]
