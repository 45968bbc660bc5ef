import pytest

from handler_base.audio import encode_wav, read_wav
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.messages import VoiceRequest
from handler_base.testing.speech import silence_wav
from voice_assistant.audio_in import audio_file_of


def test_a_wav_file_goes_to_whisper_as_it_came() -> None:
    wav = silence_wav(1.0, 44_100)
    assert audio_file_of(VoiceRequest(audio=wav)) == wav


def test_compressed_audio_is_passed_on_undecoded() -> None:
    ogg = b"OggS" + b"\x00" * 100  # not a WAV header: Whisper decodes or refuses it
    assert audio_file_of(VoiceRequest(audio=ogg)) == ogg


def test_raw_pcm_gets_a_wav_header_with_its_rate() -> None:
    pcm = b"\x01\x00\xff\xff" * 800
    wav = read_wav(audio_file_of(VoiceRequest(audio=pcm, format="pcm_s16le", sample_rate=8000)))
    assert (wav.sample_rate, wav.channels, wav.frames) == (8000, 1, 1600)


def test_pcm_of_half_samples_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="16-bit"):
        audio_file_of(VoiceRequest(audio=b"\x00" * 3, format="pcm_s16le", sample_rate=16000))


def test_a_wav_rate_out_of_range_is_refused() -> None:
    wav = encode_wav(b"\x00\x00" * 400, 4000)
    with pytest.raises(InvalidRequestError, match="4000 Hz"):
        audio_file_of(VoiceRequest(audio=wav))


def test_too_long_is_too_large() -> None:
    with pytest.raises(TooLargeError, match="limit is 2 s"):
        audio_file_of(VoiceRequest(audio=silence_wav(3.0, 8000)), max_audio_s=2)
    pcm = b"\x00\x00" * 8000 * 3
    with pytest.raises(TooLargeError):
        audio_file_of(VoiceRequest(audio=pcm, format="pcm_s16le", sample_rate=8000), max_audio_s=2)
    # A WAV written to a pipe declares no length: what is there counts.
    piped = bytearray(silence_wav(3.0, 8000))
    piped[40:44] = b"\xff\xff\xff\xff"
    with pytest.raises(TooLargeError):
        audio_file_of(VoiceRequest(audio=bytes(piped)), max_audio_s=2)
