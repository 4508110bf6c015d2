//! Harness for tests that run real `tern` processes.
