def scan_dir(
    path: bytes, sort_big: bool, owners: bool = True, /
) -> tuple[
    int,
    int,
    int,
    int,
    float,
    int,
    list[int],
    list[tuple[bytes, int, int, int, int, int, float, int]],
    list[tuple[int, int, int, int, int, int]],
    list[tuple[bytes, int]],
    int,
    list[tuple[int, int, int, int]],
]: ...
