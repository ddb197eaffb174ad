"""Tiny seeded spectrogram encoders (Whisper, AST, CLAP) with their own feature extractors,
saved as `save_pretrained` folders, for the audio tests."""

from __future__ import annotations

from pathlib import Path

import torch


def save_whisper(folder: Path, seed: int = 0, seconds: int = 10) -> Path:
    """Whisper with 80 mel bins and a 2-layer encoder over `seconds` of input (the real
    models: 30 s, 3000 mel frames, 1500 encoder frames; shorter keeps the tests fast)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        max_target_positions=16,
        max_source_positions=seconds * 50,
    )
    WhisperModel(config).eval().save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=seconds).save_pretrained(folder)
    return folder


def save_ast(folder: Path, seed: int = 0, max_length: int = 256) -> Path:
    """AST over `max_length` fbank frames (the real models: 1024, 10.24 s)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=max_length,
        num_mel_bins=128,
    )
    ASTModel(config).eval().save_pretrained(folder)
    ASTFeatureExtractor(max_length=max_length).save_pretrained(folder)
    return folder


def save_clap(folder: Path, seed: int = 0) -> Path:
    """A whole ClapModel (text and audio towers, as the hub checkpoints), unfused, with the
    unfused checkpoints' extractor (`rand_trunc`: random crops of long inputs)."""
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    torch.manual_seed(seed)
    audio = ClapAudioConfig(
        hidden_size=32,
        projection_dim=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        patch_embeds_hidden_size=16,
        window_size=8,
        spec_size=256,
        num_mel_bins=64,
        enable_fusion=False,
    )
    text = ClapTextConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        projection_dim=16,
        max_position_embeddings=40,
    )
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    ClapModel(config).eval().save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)
    return folder
