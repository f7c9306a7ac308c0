"""Foundations every verb shares: the one user-facing error type (`errors`), atomic file writes
(`fileio`), the manifest that travels with every artifact (`manifest`), the CLI shape and shared
argument groups (`cli`), tables and plots (`report`).

Everything here is TensorFlow-free except `tfcompat`, the single place the TF stack is imported
(with tf-keras selected first); `tfdefakeq.runtime` never imports it.
"""
