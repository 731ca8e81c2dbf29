class Cache:
    pass
