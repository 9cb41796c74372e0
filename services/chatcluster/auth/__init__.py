"""Credentials: JWT access and refresh tokens (``tokens``) and app secrets (``secrets``)."""
