import io
import wave

import numpy as np
import pytest

from handler_base.audio import (
    PCM16_MAX,
    AudioFormatError,
    encode_wav,
    pcm16_bytes,
    read_wav,
    rms,
    to_pcm16,
)


def tone(seconds: float = 0.5, rate: int = 16_000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_float_samples_are_clipped_and_scaled() -> None:
    out = to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]))
    assert out.dtype == np.int16
    assert out.tolist() == [-PCM16_MAX, -PCM16_MAX, 0, PCM16_MAX // 2, PCM16_MAX, PCM16_MAX]


def test_int16_samples_pass_unchanged_and_others_are_refused() -> None:
    samples = np.array([1, -2, 3], dtype=np.int16)
    assert to_pcm16(samples) is samples
    with pytest.raises(TypeError, match="int16 or float"):
        to_pcm16(np.array([1, 2], dtype=np.int64))  # type: ignore[arg-type]


def test_pcm16_bytes_are_little_endian() -> None:
    assert pcm16_bytes(np.array([1, -1], dtype=np.int16)) == b"\x01\x00\xff\xff"


def test_wav_round_trip_mono() -> None:
    samples = to_pcm16(tone())
    data = encode_wav(samples, 16_000)
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16_000, 1, 2)
    audio = read_wav(data)
    assert audio.sample_rate == 16_000
    assert audio.channels == 1
    assert audio.frames == len(samples)
    assert audio.duration_s == pytest.approx(0.5)
    assert np.array_equal(audio.samples[:, 0], samples)


def test_wav_round_trip_stereo_and_raw_bytes() -> None:
    stereo = np.stack([tone(), -tone()], axis=1)
    audio = read_wav(encode_wav(stereo, 8_000))
    assert audio.channels == 2
    assert audio.samples.shape == (len(stereo), 2)
    assert np.abs(audio.mono()).max() < 1e-3  # the channels cancel out
    raw = pcm16_bytes(tone(rate=8_000))
    assert read_wav(encode_wav(raw, 8_000)).samples.tobytes() == raw


@pytest.mark.parametrize("width", [1, 3, 4])
def test_other_sample_widths_become_16_bit(width: int) -> None:
    samples = to_pcm16(tone(0.1))
    if width == 1:
        raw = ((samples >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 3:
        wide = samples.astype("<i4") << 8
        raw = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in wide)
    else:
        raw = (samples.astype("<i4") << 16).tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(width)
        wav.setframerate(16_000)
        wav.writeframes(raw)
    read = read_wav(buffer.getvalue()).samples[:, 0]
    tolerance = 256 if width == 1 else 0
    assert np.abs(read.astype(int) - samples.astype(int)).max() <= tolerance


def test_a_data_chunk_declared_longer_than_the_file_is_read_to_its_end() -> None:
    samples = to_pcm16(tone(0.2))
    data = bytearray(encode_wav(samples, 22_050))
    # What `espeak-ng --stdout` writes: sizes it cannot know, set near 2 GiB.
    data[4:8] = (0x7FFFF024).to_bytes(4, "little")
    data[40:44] = (0x7FFFF000).to_bytes(4, "little")
    assert np.array_equal(read_wav(bytes(data)).samples[:, 0], samples)


@pytest.mark.parametrize("data", [b"", b"not a wav at all", b"RIFF\x00\x00\x00\x00WAVE"])
def test_bytes_that_are_not_wav_are_refused(data: bytes) -> None:
    with pytest.raises(AudioFormatError):
        read_wav(data)


def test_rms() -> None:
    assert rms(np.zeros(100, dtype=np.int16)) == 0.0
    assert rms(np.array([], dtype=np.float32)) == 0.0
    assert rms(tone(amplitude=0.5)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert rms(to_pcm16(tone(amplitude=0.5))) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
