def main() -> None:
    raise SystemExit("xcronctl is not built yet")
