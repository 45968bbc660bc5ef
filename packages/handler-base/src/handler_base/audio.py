"""Small WAV and PCM helpers shared by the speech services and the voice handler.

Audio inside the platform is 16-bit signed PCM, little-endian (``s16le``). These helpers
turn samples into WAV bytes, read a WAV back into numpy, and measure its level, with the
standard library's :mod:`wave` and numpy only.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PCM16_MAX = 32767
"""The largest 16-bit sample; float audio in [-1, 1] is scaled by it."""

Samples = npt.NDArray[np.int16] | npt.NDArray[np.floating]
"""Audio samples: int16, or float in [-1, 1]; 1-D (mono) or ``(frames, channels)``."""


class AudioFormatError(ValueError):
    """Bytes that are not a WAV file this module can read."""


@dataclass(frozen=True, slots=True)
class WavAudio:
    """The contents of a WAV file, its samples as 16-bit integers.

    Attributes:
        sample_rate: Frames per second.
        channels: Samples per frame.
        samples: int16 array of shape ``(frames, channels)``.
    """

    sample_rate: int
    channels: int
    samples: npt.NDArray[np.int16]

    @property
    def frames(self) -> int:
        """The number of frames (samples per channel)."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """The length in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def mono(self) -> npt.NDArray[np.float32]:
        """The samples as float32 in [-1, 1], channels averaged into one."""
        mono: npt.NDArray[np.float32] = self.samples.astype(np.float32).mean(axis=1)
        return mono / np.float32(PCM16_MAX + 1)


def to_pcm16(samples: Samples) -> npt.NDArray[np.int16]:
    """Samples as int16: int16 input unchanged, float input clipped to [-1, 1] and scaled.

    Raises:
        TypeError: The samples are neither int16 nor floating point.
    """
    array: npt.NDArray[Any] = np.asarray(samples)
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.floating):
        scaled: npt.NDArray[np.int16] = (np.clip(array, -1.0, 1.0) * PCM16_MAX).astype(np.int16)
        return scaled
    raise TypeError(f"expected int16 or float samples, got {array.dtype}")


def pcm16_bytes(samples: Samples) -> bytes:
    """Samples as raw ``s16le`` bytes (frames interleaved)."""
    return to_pcm16(samples).astype("<i2", copy=False).tobytes()


def encode_wav(samples: Samples | bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV file of ``samples``.

    Args:
        samples: int16 or float samples (1-D for mono, ``(frames, channels)`` otherwise),
            or raw ``s16le`` bytes with frames interleaved.
        sample_rate: Frames per second.
        channels: Samples per frame; taken from a 2-D array's shape when given one.

    Returns:
        The bytes of the WAV file.
    """
    if isinstance(samples, bytes):
        data = samples
    else:
        array: npt.NDArray[Any] = np.asarray(samples)
        if array.ndim == 2:
            channels = int(array.shape[1])
        data = pcm16_bytes(array)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(data)
    return buffer.getvalue()


def read_wav(data: bytes) -> WavAudio:
    """Read a PCM WAV file (8, 16, 24 or 32-bit integer samples) into 16-bit samples.

    A data chunk whose declared size is larger than the file (as written by tools that
    stream to a pipe, e.g. ``espeak-ng --stdout``) is read up to the end of the file.

    Raises:
        AudioFormatError: The bytes are not a PCM WAV file.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"not a PCM WAV file: {exc}") from exc
    if rate <= 0 or channels <= 0:
        raise AudioFormatError(f"not a usable WAV file: rate {rate}, {channels} channels")
    frame_bytes = width * channels
    raw = raw[: len(raw) - len(raw) % frame_bytes]
    return WavAudio(
        sample_rate=rate,
        channels=channels,
        samples=_int_to_pcm16(raw, width).reshape(-1, channels),
    )


def _int_to_pcm16(raw: bytes, width: int) -> npt.NDArray[np.int16]:
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if width == 1:  # 8-bit WAV is unsigned
        return ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    if width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return triples[:, 2].view(np.int8).astype(np.int16) << 8 | triples[:, 1]
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    raise AudioFormatError(f"unsupported sample width: {width} bytes")


def rms(samples: Samples) -> float:
    """The root mean square level of ``samples``, in [0, 1] of full scale (0 when empty)."""
    array = np.asarray(samples)
    if array.size == 0:
        return 0.0
    if array.dtype == np.int16:
        scaled = array.astype(np.float64) / (PCM16_MAX + 1)
    else:
        scaled = array.astype(np.float64)
    return float(np.sqrt(np.mean(np.square(scaled))))
