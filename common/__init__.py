"""Small pieces shared by every package: the user-error type, atomic artifact writes, lazy imports."""
