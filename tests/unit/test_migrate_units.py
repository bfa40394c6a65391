"""Pure pieces of migrate: LFS pointer text, .gitattributes rewriting, path globs."""

from __future__ import annotations

from coral_git.core.globs import matches, selected, split_list
from coral_git.migrate import attributes, lfs
from coral_git.migrate.patterns import PathFilter

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
LFS_TEXT = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()


def test_lfs_pointer_parse_and_render_byte_exact() -> None:
    p = lfs.parse(LFS_TEXT)
    assert p == lfs.LfsPointer(OID, 12345)
    assert p.encode() == LFS_TEXT
    for bad in (
        LFS_TEXT.replace(b"size 12345", b"size 012345"),
        LFS_TEXT[:-1],
        LFS_TEXT.replace(b"sha256:4d", b"sha256:4D"),
        LFS_TEXT + b"ext-0-foo sha256:00\n",
        b"coral-pointer 1\n",
        LFS_TEXT + b" " * 2000,
    ):
        assert lfs.parse(bad) is None, bad


def test_attributes_round_trip() -> None:
    text = "# models\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n*.txt text\n"
    coral = attributes.to_coral(text, ["*.safetensors", "*.pt"], {"*.safetensors"}, set())
    assert coral.splitlines() == [
        "# models",
        "*.safetensors filter=coral diff=coral merge=coral -text",
        "*.parquet filter=lfs diff=lfs merge=lfs -text",
        "*.txt text",
    ]
    assert attributes.to_coral(coral, ["*.safetensors", "*.pt"], {"*.safetensors"}, set()) == coral  # idempotent
    assert attributes.to_lfs(coral, plain=False) == text
    assert attributes.to_lfs(coral, plain=True).splitlines() == ["# models", "*.parquet filter=lfs diff=lfs merge=lfs -text", "*.txt text"]
    assert attributes.to_lfs(coral, plain=False, patterns=["*.bin"]) == coral
    # a pattern that matched but had no line is appended; an excluded LFS path gets a line that wins
    added = attributes.to_coral("", ["*.bin"], {"*.bin"}, {"data/*"})
    assert added.splitlines() == ["*.bin filter=coral diff=coral merge=coral -text", "data/* filter=lfs diff=lfs merge=lfs -text"]
    assert attributes.coral_patterns(added) == ["*.bin"] and attributes.lfs_patterns(added) == ["data/*"]


def test_globs() -> None:
    assert matches("a/b/model.safetensors", "*.safetensors")
    assert matches("model.safetensors", "/model.safetensors")
    assert not matches("x/model.safetensors", "/model.safetensors")
    assert matches("ckpt/deep/x.bin", "ckpt/")
    assert matches("ckpt/deep/x.bin", "ckpt/**")
    assert not matches("other/ckpt/x.bin", "ckpt/*")
    assert selected("a.bin", [], ["*.txt"]) and not selected("a.txt", [], ["*.txt"]) and not selected("a.bin", ["*.pt"], [])
    assert split_list(" a/*, *.bin ,,") == ["a/*", "*.bin"]
    pf = PathFilter(["*.safetensors", "*.bin"], ["data/*"])
    assert pf.hit("m/x.safetensors") == "*.safetensors" and pf.hit("data/x.bin") is None
    assert pf.excluded("data/x.bin") == "data/*" and pf.excluded("data/x.txt") is None
