"""RGB reading: real NTU clips decode, the right frames come back from every container, bad videos
raise a DataError naming the file or are skipped and counted."""

import numpy as np
import pytest
import torch

import deformact.data as dd
import deformact.io as dio
from deformact.io import video as dvideo
from deformact.io import video_read as dv
from deformact.tools.data_bench import random_annotations


def write_video(path, frames, **kw):
    """:func:`deformact.io.write_video` returning the path (it returns the frame count)."""
    assert dio.write_video(path, frames, **kw) == len(frames)
    return path


def _index_video(n=40, h=48, w=64):
    """Frame i is flat grey 5 * i (+ a texture that keeps H.264 honest)."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 20, (h, w, 1))
    return np.stack([np.clip(5 * i + tex, 0, 255).repeat(3, -1) for i in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("name,codec,gop", [("v.mp4", "libx264", 7), ("v.mp4", "libx264", 250),
                                             ("v.mkv", "libx264", 5), ("v.avi", "libx264", 5),
                                             ("v.avi", "mpeg4", 12), ("frames_png", "png", 0),
                                             ("frames_jpg", "mjpeg", 0)])
def test_reads_the_requested_frames(tmp_path, name, codec, gop):
    frames = _index_video()
    path = write_video(tmp_path / name, frames, codec=codec, gop=max(gop, 1), crf=12)
    dv._PTS_INDEX.clear()
    idx = np.array([39, 0, 5, 5, 6, 20, 38, 13])  # any order, repeats
    out, src = dio.read_clip(path, idx, lambda w, h: (w // 2, h // 2))
    assert out.shape == (8, 24, 32, 3) and src == (64, 48)
    got = np.round((out.astype(float).mean((1, 2, 3)) - 9.5) / 5)
    np.testing.assert_array_equal(got, idx)
    assert dio.count_frames(path) == 40


def test_reused_swscale_context_gives_the_pixels_of_a_fresh_one(tmp_path):
    import av

    path = write_video(tmp_path / "v.mp4", _index_video(6, 96, 128), gop=3)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    for w, h, interp in [(128, 96, None), (64, 48, "BILINEAR"), (100, 76, "FAST_BILINEAR"), (200, 150, "BILINEAR")]:
        for f in frames:  # the same cached context serves changing sizes and interpolations
            fresh = f.to_ndarray(width=w, height=h, format="rgb24", interpolation=interp)
            np.testing.assert_array_equal(dvideo.frame_to_rgb(f, w, h, interp), fresh)


def test_seeking_equals_sequential_decoding(tmp_path):
    frames = _index_video(60)
    path = write_video(tmp_path / "v.mp4", frames, gop=6, preset="medium")  # B-frames, many keyframes
    dv._PTS_INDEX.clear()
    idx = np.array([0, 1, 17, 18, 30, 59, 44])
    seek, _ = dio.read_clip(path, idx)
    old = dv._SEEKABLE
    dv._SEEKABLE = ()
    try:
        seq, _ = dio.read_clip(path, idx)
    finally:
        dv._SEEKABLE = old
    np.testing.assert_array_equal(seek, seq)


@pytest.mark.parametrize("clip,persons", [("S001C001P001R001A001_rgb", 1), ("ntu_sample", 2)])
def test_real_ntu_videos_decode_into_clips(shared_dir, tmp_path, clip, persons):
    n = dio.count_frames(shared_dir / "videos" / f"{clip}.avi")
    assert n == {"S001C001P001R001A001_rgb": 103, "ntu_sample": 72}[clip]
    ann = random_annotations(1, n, num_persons=persons, img_shape=(1080, 1920), prefix=clip)[0]
    ann["frame_dir"] = clip
    dd.save_pyskl({"split": {"val": [clip]}, "annotations": [ann]}, tmp_path / "a.pkl")
    ds = dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "a.pkl"), split="val",
                          video_root=str(shared_dir / "videos"), frames=8, image_size=112, num_clips=2, compact=False,
                          label_map=["a"])
    item = ds[0]
    rgb = item["rgb"]
    assert rgb.shape == (2, 3, 8, 112, 112) and rgb.dtype == torch.float32 and torch.isfinite(rgb).all()
    assert rgb.std() > 0.3  # a real picture, not a constant
    assert (rgb[:, :, 0] - rgb[:, :, -1]).abs().mean() > 0.02  # people move between first and last frame
    assert item["pose"].shape == (2, 2, 8, 17, 3) and item["person_mask"][:, :persons].all()
    # RGB-only, no keypoints and no total_frames: the frame count comes from the video itself
    rgb_only = dd.build_dataset(type="pyskl", ann_file=str(_rgb_only_ann(tmp_path, clip)), modality="rgb",
                                video_root=str(shared_dir / "videos"), frames=4, image_size=64, train=True)
    item = rgb_only[0]
    assert set(item) == {"rgb", "label"} and item["rgb"].shape == (3, 4, 64, 64) and item["rgb"].std() > 0.3


def _rgb_only_ann(tmp_path, clip):
    path = tmp_path / "rgb.pkl"
    dd.save_pyskl({"annotations": [{"frame_dir": clip, "label": 0}]}, path)
    return path


def _dataset(tmp_path, n=3, **kw):
    root = tmp_path / "videos"
    root.mkdir(parents=True)
    anns = random_annotations(n, 40, img_shape=(48, 64), num_classes=3)
    for a in anns:
        write_video(root / f"{a['frame_dir']}.mp4", _index_video())
    dd.save_pyskl({"split": {"all": [a["frame_dir"] for a in anns]}, "annotations": anns}, tmp_path / "a.pkl")
    return dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "a.pkl"), split="all", video_root=str(root),
                            frames=4, image_size=32, **kw), root, anns


def test_missing_video_names_the_file(tmp_path):
    ds, root, anns = _dataset(tmp_path)
    (root / f"{anns[1]['frame_dir']}.mp4").unlink()
    ds[0]
    with pytest.raises(dd.DataError, match=f"{anns[1]['frame_dir']}.*not found"):
        ds[1]


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_truncated_video_names_the_file(tmp_path, shared_dir, kind):
    if kind == "avi":
        path = tmp_path / "cut.avi"
        data = (shared_dir / "videos" / "ntu_sample.avi").read_bytes()
        path.write_bytes(data[: len(data) // 3])
        idx = [0, 70]
    else:
        path = write_video(tmp_path / "full.mp4", _index_video())
        data = path.read_bytes()
        path = tmp_path / "cut.mp4"
        path.write_bytes(data[: len(data) // 2])
        idx = [0, 39]
    dv._PTS_INDEX.clear()
    with pytest.raises(dd.DataError, match="cut." + kind):
        dio.read_clip(path, idx)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(dd.DataError, match="empty.mp4"):
        dio.read_clip(empty, [0])


def test_video_shorter_than_annotation(tmp_path):
    path = write_video(tmp_path / "v.mp4", _index_video(40))
    out, _ = dio.read_clip(path, [38, 39, 40, 41])  # 2 frames past the end: an off-by-one export
    assert (out[2] == out[1]).all() and (out[3] == out[1]).all()
    with pytest.raises(dd.DataError, match="v.mp4.*frame 50.*40 frames"):
        dio.read_clip(path, [0, 50])


def test_skip_bad_replaces_and_counts(tmp_path):
    ds, root, anns = _dataset(tmp_path, n=4, skip_bad=True, train=True)
    (root / f"{anns[1]['frame_dir']}.mp4").write_bytes(b"not a video")
    with pytest.warns(UserWarning, match=anns[1]["frame_dir"]):
        items = [ds[i] for i in range(4)]
    assert ds.num_skipped == 1 and items[1]["label"] == anns[2]["label"]  # training: replaced by the next clip
    # counted across DataLoader worker processes too (not training: left out, never replaced)
    ds2, root2, anns2 = _dataset(tmp_path / "b", n=4, skip_bad=True)
    (root2 / f"{anns2[0]['frame_dir']}.mp4").unlink()
    (root2 / f"{anns2[2]['frame_dir']}.mp4").unlink()
    batches = list(torch.utils.data.DataLoader(ds2, batch_size=2, num_workers=2))  # warns in the workers
    assert sum(len(b["label"]) for b in batches) == 4 and ds2.num_skipped == 2
    labels = torch.cat([b["label"] for b in batches]).tolist()
    assert labels == [dd.SKIPPED_LABEL, anns2[1]["label"], dd.SKIPPED_LABEL, anns2[3]["label"]]


def test_skip_bad_on_test_leaves_bad_clips_out(tmp_path):
    """Not training: a bad clip becomes a placeholder (label SKIPPED_LABEL, the shapes of a real
    item) that evaluation drops and counts; no neighbour is scored twice."""
    ds, root, anns = _dataset(tmp_path, n=3, skip_bad=True, num_clips=2)
    (root / f"{anns[0]['frame_dir']}.mp4").write_bytes(b"not a video")
    with pytest.warns(UserWarning, match=anns[0]["frame_dir"]):
        bad = ds[0]
    good = ds[1]
    assert bad["label"] == dd.SKIPPED_LABEL == -1 and ds.num_skipped == 1
    assert {k: v.shape for k, v in bad.items() if k != "label"} == {k: v.shape for k, v in good.items()
                                                                       if k != "label"}
    assert not bad["person_mask"].any() and good["label"] == anns[1]["label"]


@pytest.mark.parametrize("frames,size,message", [
    (200, (64, 48), "has 40 frames but its annotation 200"),  # annotation longer: poses past the video
    (16, (64, 48), "has 40 frames but its annotation 16"),    # video longer: RGB would start elsewhere
    (40, (2, 2), r"is 64x48 but its annotation's img_shape is 2x2"),
    (40, (256, 192), None), (41, (64, 48), None), (38, (64, 48), None),  # scaled copy, off-by-one exports
    (40, (48, 64), None), (40, (66, 48), None)])  # rotated; rounded to even
def test_video_must_fit_its_annotation(tmp_path, frames, size, message):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "clip00000.mp4", _index_video(40))  # 40 frames of 64 x 48
    ann = random_annotations(1, frames, img_shape=size[::-1], num_classes=1)[0]
    ann["keypoint"] = np.clip(ann["keypoint"], 0, np.array(size, np.float32) - 1)  # joints inside the frame
    dd.save_pyskl({"annotations": [ann]}, tmp_path / "a.pkl")
    kw = {"type": "pyskl", "ann_file": str(tmp_path / "a.pkl"), "video_root": str(root), "frames": 4,
          "image_size": 32}
    ds = dd.build_dataset(**kw)
    if message is None:
        assert ds[0]["rgb"].shape == (3, 4, 32, 32)
        return
    with pytest.raises(dd.DataError, match="clip00000.mp4: the video " + message):
        ds[0]
    skip = dd.build_dataset(skip_bad=True, train=True, **kw)
    with pytest.warns(UserWarning, match="clip00000.mp4"), pytest.raises(dd.DataError, match="1 bad sample"):
        skip[0]  # the only clip: nothing to replace it with
    test = dd.build_dataset(skip_bad=True, **kw)
    with pytest.warns(UserWarning, match="clip00000.mp4"):
        assert test[0]["label"] == dd.SKIPPED_LABEL and test.num_skipped == 1


def test_one_extension_list_for_training_and_extraction(tmp_path):
    """Every container that trains (find_media) is also found by extract-poses (list_videos)."""
    from deformact import pose

    assert len(dio.VIDEO_EXTS) == len(set(dio.VIDEO_EXTS)) == 11
    assert {".mp4", ".avi", ".mkv", ".flv", ".wmv", ".ts"} <= set(dio.VIDEO_EXTS)
    assert pose.list_videos is dio.list_videos
    frames = _index_video(4, 32, 32)
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "clip.ts", frames)  # MPEG-TS
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "b.WMV").write_bytes(b"")  # found by its extension; reported when opened
    assert dio.list_videos([tmp_path]) == [(tmp_path / "b.WMV", "b"), (tmp_path / "sub" / "clip.ts", "sub/clip")]
    assert dio.find_media(tmp_path, "sub/clip") == tmp_path / "sub" / "clip.ts"
    assert dio.count_frames(tmp_path / "sub" / "clip.ts") == 4
    out, src = dio.read_clip(tmp_path / "sub" / "clip.ts", [3, 0])
    assert out.shape == (2, 32, 32, 3) and src == (32, 32)


def test_one_video_error_caught_as_data_error(tmp_path):
    import deformact.errors as de
    from deformact import pose

    assert pose.VideoError is dd.VideoError is de.VideoError and issubclass(de.VideoError, de.DataError)
    assert dd.DataError is de.DataError
    garbage = tmp_path / "noise.mp4"
    garbage.write_bytes(np.random.default_rng(1).bytes(5000))
    for call in (lambda: dio.probe(tmp_path / "gone.mp4"), lambda: dio.probe(garbage),
                 lambda: dio.read_clip(tmp_path / "gone.mp4", [0]), lambda: dio.read_clip(garbage, [0]),
                 lambda: dio.count_frames(garbage), lambda: dio.read_frames(garbage),
                 lambda: dio.find_media(tmp_path, "gone")):
        with pytest.raises(de.DataError) as info:  # what the dataset's skip_bad and the CLI catch
            call()
        assert type(info.value) is de.VideoError and ("noise.mp4" in str(info.value) or "gone" in str(info.value))


def test_write_video_streams_and_probe_reads_back(tmp_path):
    frames = (np.full((33, 47, 3), 10 * i, np.uint8) for i in range(9))  # a generator, odd size
    assert dio.write_video(tmp_path / "deep" / "v.mp4", frames, fps=12.5) == 9  # folder made
    info = dio.probe(tmp_path / "deep" / "v.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (46, 32, 9, 12.5)
    assert dio.read_frames(tmp_path / "deep" / "v.mp4", max_side=None).shape == (9, 32, 46, 3)
    assert dio.write_video(tmp_path / "m.avi", _index_video(5), codec="mpeg4") == 5
    assert dio.count_frames(tmp_path / "m.avi") == 5
    assert dio.write_video(tmp_path / "folder", _index_video(3, 20, 30), codec="png") == 3
    info = dio.probe(tmp_path / "folder")
    assert (info.width, info.height, info.frames) == (30, 20, 3)
