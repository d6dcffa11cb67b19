/*
 * _fastscan: read one directory and lstat every entry, like GNU du.
 *
 * The optional compiled half of du_exporter.scan (which falls back to
 * os.scandir when this module is not built).  One call reads one
 * directory with the GIL released: getdents64, then fstatat(dirfd, name,
 * AT_SYMLINK_NOFOLLOW) per entry.  Plain files are summed here; only
 * subdirectories, inodes with more than one link and errors come back as
 * Python objects, so the Python cost per file is zero.
 *
 * scan_dir(path: bytes, sort_big: bool, owners: bool, dev: int, ino: int,
 *          nofollow: bool, one_fs: bool, root_dev: int,
 *          skip: tuple[bytes, ...] = ()) -> tuple:
 *   (entries, files, blocks, apparent, mtime, hist_sum, hist,
 *    subdirs, links, errors, dir_errno, owners)
 * The directory is opened with O_NOFOLLOW when nofollow is true, and is
 * read only if its fstat shows (dev, ino), the identity recorded when it
 * was listed (else dir_errno is ENOENT, as GNU fts does): a directory
 * swapped for a symlink or another directory mid-scan is never read.
 * With one_fs, non-directories whose st_dev is not root_dev are left out
 * (du -x); subdirectories come back and the caller checks them.
 * where
 *   blocks    sum of st_blocks (512-byte units) of counted non-directories
 *   sums      (blocks, apparent, hist_sum, owners' sums) are unsigned
 *             64-bit and saturate at 2**64 - 1 like du's
 *   hist      list of counts per SIZE_BUCKETS bound (apparent size of
 *             regular files), last = larger than every bound
 *   subdirs   [(name, index, dev, ino, st_blocks, st_size, mtime, uid)]
 *   links     [(dev, ino, index, st_blocks, st_size, uid)] for nlink > 1
 *   owners    [(uid, blocks, apparent, files)]: the counted
 *             non-directories (not the links) summed per owner; empty
 *             when the argument owners is false
 *   errors    [(name, errno)] for entries that could not be stat'ed
 *   dir_errno errno of opening or reading the directory, else 0
 * index is the entry's position in the listing (after the inode sort
 * GNU fts applies to each batch of 100,000 entries read that holds more
 * than 10,000, done here when sort_big is true).
 * skip holds ignore-dirs rules (du_exporter.scan.ignore.Ignore.rules):
 * entries they match are neither stat'ed nor counted, as if absent but
 * for the inode sort and its batches (which count every name read, as
 * fts does).  A rule is a kind byte and its argument:
 *   'n' name      the entry's name is exactly `name`
 *   'g' program   the name matches the glob program
 *   'p' program   the entry's path (path + "/" + name) matches it
 * A program is a sequence of elements, each matching one byte but for
 * STAR (any bytes, '/' too): BYTE b, ANY, STAR, SET + 32 bytes (a bitmap
 * of the bytes it matches, bit b & 7 of byte b >> 3).  It must match the
 * whole string.
 *
 * scan_dirs(dirs: list[(path, sort_big, dev, ino, nofollow[, skip])],
 *           owners: bool,
 *           one_fs: bool, root_dev: int, threads: int, slow_ns: int)
 *           -> list[tuple]:
 *   scan_dir's tuple for each directory, in the order given, read by up to
 *   `threads` threads (the caller's included) with the GIL released for
 *   the whole batch: idle threads take the next directory, or help stat
 *   the entries of a big one (windows of WINDOW names, claimed CHUNK at a
 *   time).  Every directory is still summed by one thread in listing
 *   order, so each tuple is the one scan_dir returns.  The caller's
 *   thread starts alone; the others start once the batch has taken more
 *   than 1 ms and more than slow_ns per directory read or lstat (at once
 *   when slow_ns is 0).
 *
 * Walk(unit, base, parent, export, top, level, owners, one_fs, root_dev,
 *      threads, batch, slow_ns, sorts, skip=(), place=None): the walk of
 *   one subtree unit, what walker._Walker.run does with scan_dirs, with
 *   its loop here: a depth-first stack on the heap (no recursion: any
 *   depth), batches of up to `batch` pending directories read by
 *   scan_dirs' threads, each folded into its row in the same order, rows
 *   for the directories at most `level` deep (exported under `top`), order
 *   keys of 4 bytes per level, cycles (dev, ino of an ancestor or of
 *   unit.ancestors) reported and not entered, subdirectories on another
 *   device skipped with one_fs; `sorts(dev)` is asked once per device.
 *   Paths too long for one open are opened piece by piece (open_dir).
 *   skip: the rules of every directory (a tuple, as scan_dir's), or a
 *   callable path -> rules asked once per directory read (when a path
 *   rule makes them differ).  place: with nested roots, a callable path ->
 *   ((root, level) | None, split) asked once per subdirectory met: split,
 *   it gets a row of its own, exported under root at level when given
 *   (instead of `top` and `level`).
 * Walk.step(take, room, limit) -> (rows, links, children, errors,
 *      unreadable, entries, hist, hist_sum, owners, done):
 *   walks on until the stack is empty, or rows + links >= limit (> 0),
 *   or take() (asked before each batch while more than one directory is
 *   pending) is true: then every pending directory is handed back as
 *   (Unit fields, row id it hangs on).  rows and links are the walker's
 *   Row and Link tuples; errors [(path, errno)] at most `room`, errno
 *   -ELOOP for a cycle, all counted in unreadable; owners [(uid, disk,
 *   apparent)] in bytes; done: nothing left to walk.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define N_BUCKETS 13          /* 1 KiB * 4**k, k = 0..12 */
#define FTS_SORT_THRESHOLD 10000
#define FTS_BATCH 100000
/* Parallel stat in a directory: names per window (its stats are held at
   once, about 150 KiB), per claim, and the fewest worth sharing. */
#define WINDOW 1024
#define CHUNK 16
#define SHARE_MIN 64
#define THREAD_STACK (256 * 1024)
/* Helper threads start only once the batch proves slow: after SLOW_AFTER
   ns, at more than slow_ns (an argument) per directory read or lstat, so
   a CPU-bound walk pays for no threads it cannot use. */
#define SLOW_AFTER 1000000LL

/* One batch of names read (GNU fts reads and sorts 100,000 at a time). */
typedef struct {
    size_t name;              /* offset into the batch's name buffer */
    ino_t d_ino;
} name_t;

typedef struct {
    name_t *items;
    size_t len, cap;
    char *names;
    size_t names_len, names_cap;
    size_t skipped;           /* names read but ignored (the skip rules) */
} batch_t;

/* --- skip rules (ignore-dirs) ------------------------------------------- */

enum { OP_BYTE = 1, OP_ANY, OP_STAR, OP_SET };
#define SET_BYTES 32

typedef struct {
    const unsigned char *p;   /* kind byte, then the name or program */
    size_t len;
} rule_t;

/* One directory's skip rules; they point into the caller's bytes. */
typedef struct {
    rule_t *rules;
    size_t n;
    int paths;                /* some rule matches the entry's path */
} filter_t;

/* Whether glob program prog matches all of s (the classic one-star
   backtrack: every element but STAR takes one byte, so retrying from
   the last STAR one byte further on is all that matching can need). */
static int glob_match(const unsigned char *prog, size_t plen,
                      const unsigned char *s, size_t slen) {
    size_t p = 0, i = 0, star_p = (size_t)-1, star_i = 0;
    while (i < slen) {
        if (p < plen) {
            unsigned char op = prog[p], c = s[i];
            if (op == OP_STAR) {
                star_p = ++p;
                star_i = i;
                continue;
            }
            if (op == OP_ANY || (op == OP_BYTE && prog[p + 1] == c)
                || (op == OP_SET && (prog[p + 1 + (c >> 3)] >> (c & 7)) & 1)) {
                p += op == OP_SET ? 1 + SET_BYTES : op == OP_BYTE ? 2 : 1;
                i++;
                continue;
            }
        }
        if (star_p == (size_t)-1) return 0;
        p = star_p;
        i = ++star_i;
    }
    while (p < plen && prog[p] == OP_STAR) p++;
    return p == plen;
}

/* Whether rule r is well formed (a program's elements are complete). */
static int rule_ok(const unsigned char *r, size_t len) {
    if (len < 1) return 0;
    if (r[0] == 'n') return 1;
    if (r[0] != 'g' && r[0] != 'p') return 0;
    for (size_t p = 1; p < len; ) {
        size_t step = r[p] == OP_SET ? 1 + SET_BYTES : r[p] == OP_BYTE ? 2
                      : r[p] == OP_ANY || r[p] == OP_STAR ? 1 : 0;
        if (!step || step > len - p) return 0;
        p += step;
    }
    return 1;
}

/* Parse skip (None or a tuple of rules) into f; -1 with an exception. */
static int filter_parse(PyObject *skip, filter_t *f) {
    memset(f, 0, sizeof *f);
    if (!skip || skip == Py_None) return 0;
    if (!PyTuple_Check(skip)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a tuple of rules");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(skip);
    if (!n) return 0;
    f->rules = malloc((size_t)n * sizeof(rule_t));
    if (!f->rules) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyTuple_GET_ITEM(skip, i);
        if (!PyBytes_Check(r)
            || !rule_ok((const unsigned char *)PyBytes_AS_STRING(r),
                        (size_t)PyBytes_GET_SIZE(r))) {
            PyErr_SetString(PyExc_ValueError, "a skip rule is malformed");
            free(f->rules);
            f->rules = NULL;
            return -1;
        }
        f->rules[i].p = (const unsigned char *)PyBytes_AS_STRING(r);
        f->rules[i].len = (size_t)PyBytes_GET_SIZE(r);
        f->paths |= f->rules[i].p[0] == 'p';
    }
    f->n = (size_t)n;
    return 0;
}

/* Whether an entry is ignored: its name, and its path (full, of length
   full_len) when a rule needs it. */
static int filter_skips(const filter_t *f, const char *name, size_t len,
                        const char *full, size_t full_len) {
    for (size_t i = 0; i < f->n; i++) {
        const rule_t *r = &f->rules[i];
        const unsigned char *arg = r->p + 1;
        size_t arg_len = r->len - 1;
        if (r->p[0] == 'n' ? arg_len == len && !memcmp(arg, name, len)
            : r->p[0] == 'g'
              ? glob_match(arg, arg_len, (const unsigned char *)name, len)
              : glob_match(arg, arg_len, (const unsigned char *)full, full_len))
            return 1;
    }
    return 0;
}

/* What must reach Python: subdirectories, multi-link inodes, errors. */
enum { REC_DIR, REC_LINK, REC_ERR };

typedef struct {
    int kind, err;
    size_t name;              /* offset into scan_t.rec_names */
    size_t index;
    unsigned long long dev, ino, uid;
    long long blocks, size;
    double mtime;
} rec_t;

typedef unsigned long long u64;

typedef struct {
    uid_t uid;
    u64 blocks, apparent, files;
} owner_t;

/* Everything one directory adds up to; filled without the GIL. */
typedef struct {
    int one_fs;
    dev_t root_dev;
    long long count, files;
    u64 blocks, apparent, hsum;
    long long hist[N_BUCKETS + 1];
    double mtime;
    int by_owner;             /* sum per owner (the owners argument) */
    owner_t *owners;
    size_t n_owners;
    rec_t *recs;
    size_t n_recs, cap_recs;
    char *rec_names;
    size_t rec_names_len, rec_names_cap;
} scan_t;

/* a + b, saturating at 2**64 - 1 as du does. */
static u64 sat_add(u64 a, u64 b) {
    u64 sum;
    return __builtin_add_overflow(a, b, &sum) ? ~0ULL : sum;
}

/* st_size is signed; a negative one counts as 0. */
static u64 unsigned_of(long long v) { return v < 0 ? 0 : (u64)v; }

/* The blocks du counts: it computes st_blocks * 512 in unsigned 64 bits,
   so only the low 55 bits of st_blocks (signed in userspace) count. */
static u64 du_blocks(blkcnt_t b) { return (u64)b & ((1ULL << 55) - 1); }

static int grow(void **buf, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) cap2 *= 2;
    void *grown = realloc(*buf, cap2 * size);
    if (!grown) return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

static int add_name(char **buf, size_t *len, size_t *cap, const char *name,
                    size_t *offset) {
    size_t n = strlen(name) + 1;
    if (grow((void **)buf, cap, *len + n, 1) < 0) return -1;
    memcpy(*buf + *len, name, n);
    *offset = *len;
    *len += n;
    return 0;
}

static int batch_add(batch_t *b, const char *name, ino_t ino) {
    if (grow((void **)&b->items, &b->cap, b->len + 1, sizeof(name_t)) < 0)
        return -1;
    size_t offset;
    if (add_name(&b->names, &b->names_len, &b->names_cap, name, &offset) < 0)
        return -1;
    b->items[b->len].name = offset;
    b->items[b->len].d_ino = ino;
    b->len++;
    return 0;
}

static int by_inode(const void *a, const void *b) {
    ino_t x = ((const name_t *)a)->d_ino, y = ((const name_t *)b)->d_ino;
    return (x > y) - (x < y);
}

static double mtime_of(const struct stat *st) {
    /* The same formula as os.stat_result.st_mtime. */
    return (double)st->st_mtim.tv_sec + (double)st->st_mtim.tv_nsec * 1e-9;
}

static int bucket_of(long long size) {
    long long bound = 1024;
    for (int k = 0; k < N_BUCKETS; k++, bound *= 4)
        if (size <= bound) return k;
    return N_BUCKETS;
}

static int owner_add(scan_t *sc, const struct stat *st) {
    for (size_t i = 0; i < sc->n_owners; i++) {
        owner_t *o = &sc->owners[i];
        if (o->uid == st->st_uid) {
            o->blocks = sat_add(o->blocks, du_blocks(st->st_blocks));
            o->apparent = sat_add(o->apparent, unsigned_of(st->st_size));
            o->files++;
            return 0;
        }
    }
    owner_t *grown = realloc(sc->owners, (sc->n_owners + 1) * sizeof(owner_t));
    if (!grown) return -1;
    sc->owners = grown;
    grown[sc->n_owners++] = (owner_t){st->st_uid, du_blocks(st->st_blocks),
                                      unsigned_of(st->st_size), 1};
    return 0;
}

static int record(scan_t *sc, int kind, const char *name, size_t index,
                  const struct stat *st, int err) {
    if (grow((void **)&sc->recs, &sc->cap_recs, sc->n_recs + 1, sizeof(rec_t)) < 0)
        return -1;
    rec_t *r = &sc->recs[sc->n_recs];
    memset(r, 0, sizeof *r);
    if (add_name(&sc->rec_names, &sc->rec_names_len, &sc->rec_names_cap, name,
                 &r->name) < 0)
        return -1;
    r->kind = kind;
    r->err = err;
    r->index = index;
    if (st) {
        r->dev = st->st_dev;
        r->ino = st->st_ino;
        r->uid = st->st_uid;
        r->blocks = (long long)du_blocks(st->st_blocks);
        r->size = st->st_size;
        r->mtime = mtime_of(st);
    }
    sc->n_recs++;
    return 0;
}

/* Fold one lstat'ed entry (err: the lstat's errno) in: files are summed
   here, the rest kept. */
static int fold_stat(scan_t *sc, const char *name, size_t index,
                     const struct stat *st_, int err) {
    if (err) return record(sc, REC_ERR, name, index, NULL, err);
    const struct stat st = *st_;
    sc->count++;
    if (S_ISDIR(st.st_mode)) return record(sc, REC_DIR, name, index, &st, 0);
    if (sc->one_fs && st.st_dev != sc->root_dev) return 0;  /* du -x */
    sc->files++;
    double m = mtime_of(&st);
    if (m > sc->mtime) sc->mtime = m;
    if (S_ISREG(st.st_mode)) {
        sc->hist[bucket_of(st.st_size)]++;
        sc->hsum = sat_add(sc->hsum, unsigned_of(st.st_size));
    }
    if (st.st_nlink > 1) return record(sc, REC_LINK, name, index, &st, 0);
    sc->blocks = sat_add(sc->blocks, du_blocks(st.st_blocks));
    sc->apparent = sat_add(sc->apparent, unsigned_of(st.st_size));
    return sc->by_owner ? owner_add(sc, &st) : 0;
}

/* lstat one entry and fold it in. */
static int fold(scan_t *sc, int dfd, const char *name, size_t index) {
    struct stat st;
    int err = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) ? errno : 0;
    return fold_stat(sc, name, index, &st, err);
}

/* --- threads of one scan_dirs call -------------------------------------- */

/* A window of one directory's names whose lstats any thread may take. */
typedef struct win {
    int dfd;
    const char *names;
    const name_t *items;
    struct stat *sts;
    int *errs;
    size_t n;
    size_t next;              /* next name to claim (atomic) */
    int refs;                 /* helpers inside (under the pool lock) */
    struct win *prev, *after; /* the pool's list of open windows */
    struct pool *pool;
} win_t;

typedef struct {
    const char *path;
    int sort_big, nofollow;
    u64 dev, ino;
    filter_t filter;
    scan_t sc;
    int err;
} dir_t;

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dir_t *dirs;
    size_t n_dirs, next_dir, finished;
    win_t *open;              /* windows with names left to claim */
    int threads, spawned;
    pthread_t *tids;
    pthread_attr_t attr;
    long long started;        /* ns, CLOCK_MONOTONIC */
    long long ops;            /* directory reads and lstats done (atomic) */
    long long slow_ns;        /* per operation, beyond which it is slow */
    int slow;                 /* helpers wanted (under the lock) */
} pool_t;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *pool_work(void *arg);

/* Every helper thread the pool may have, once it proved slow (under the
   lock). */
static void pool_spawn(pool_t *p) {
    if (p->spawned + 1 >= p->threads) return;
    if (!p->slow) {
        long long took = now_ns() - p->started;
        long long ops = __atomic_load_n(&p->ops, __ATOMIC_RELAXED);
        if (p->slow_ns > 0 && (took < SLOW_AFTER || took < ops * p->slow_ns))
            return;
        __atomic_store_n(&p->slow, 1, __ATOMIC_RELAXED);
    }
    while (p->spawned + 1 < p->threads) {
        if (pthread_create(&p->tids[p->spawned], &p->attr, pool_work, p)) {
            /* no more: go on with fewer */
            __atomic_store_n(&p->threads, p->spawned + 1, __ATOMIC_RELAXED);
            return;
        }
        p->spawned++;
    }
}

/* Count n operations done; now and then, see whether helpers are due. */
static void pool_tick(pool_t *p, long long n) {
    if (!p || __atomic_load_n(&p->threads, __ATOMIC_RELAXED) <= 1) return;
    long long ops = __atomic_add_fetch(&p->ops, n, __ATOMIC_RELAXED);
    if (n == 1 && (ops & 15)) return;  /* check at every 16th lstat */
    if (__atomic_load_n(&p->slow, __ATOMIC_RELAXED)) return;
    pthread_mutex_lock(&p->mu);
    pool_spawn(p);
    pthread_mutex_unlock(&p->mu);
}

/* lstat the window's names, CHUNK at a time, until none is left. */
static void win_stat(win_t *w) {
    for (;;) {
        size_t lo = __atomic_fetch_add(&w->next, CHUNK, __ATOMIC_RELAXED);
        if (lo >= w->n) return;
        size_t hi = lo + CHUNK < w->n ? lo + CHUNK : w->n;
        for (size_t i = lo; i < hi; i++) {
            w->errs[i] = fstatat(w->dfd, w->names + w->items[i].name,
                                 &w->sts[i], AT_SYMLINK_NOFOLLOW) ? errno : 0;
            pool_tick(w->pool, 1);
        }
    }
}

/* Stat a window with whichever threads are idle; returns when every name
   is stat'ed and no helper still holds the window. */
static void win_share(pool_t *p, win_t *w) {
    pthread_mutex_lock(&p->mu);
    w->prev = NULL;
    w->after = p->open;
    if (p->open) p->open->prev = w;
    p->open = w;
    pool_spawn(p);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    win_stat(w);
    pthread_mutex_lock(&p->mu);
    if (w->prev) w->prev->after = w->after; else p->open = w->after;
    if (w->after) w->after->prev = w->prev;
    while (w->refs) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* Stat and fold one batch of names, sorted first where fts sorts; the
   stats of big batches are shared with the pool's idle threads (p may be
   NULL: one thread).  The folding stays in listing order. */
static int fold_batch(scan_t *sc, int dfd, batch_t *b, int sort_big,
                      size_t *index, pool_t *p) {
    if (sort_big && b->len + b->skipped > FTS_SORT_THRESHOLD)
        qsort(b->items, b->len, sizeof(name_t), by_inode);
    size_t i = 0;
    if (p && p->threads > 1 && b->len >= SHARE_MIN) {
        /* mmap, not malloc: a freed mmap'd chunk would raise malloc's
           mmap threshold, and the next window would stay in the arena. */
        size_t bytes = WINDOW * (sizeof(struct stat) + sizeof(int));
        void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return -1;
        struct stat *sts = mem;
        int *errs = (int *)(sts + WINDOW);
        int rc = 0;
        while (!rc && b->len - i >= SHARE_MIN) {
            size_t n = b->len - i < WINDOW ? b->len - i : WINDOW;
            win_t w = {dfd, b->names, b->items + i, sts, errs, n, 0, 0,
                       NULL, NULL, p};
            win_share(p, &w);
            for (size_t j = 0; j < n && !rc; j++, i++)
                rc = fold_stat(sc, b->names + b->items[i].name, (*index)++,
                               &sts[j], errs[j]);
        }
        munmap(mem, bytes);
        if (rc) return -1;
    }
    for (; i < b->len; i++) {
        if (fold(sc, dfd, b->names + b->items[i].name, (*index)++) < 0) return -1;
        pool_tick(p, 1);
    }
    b->len = 0;
    b->names_len = 0;
    b->skipped = 0;
    return 0;
}

/* Whether the open directory fd is the inode (dev, ino) listed.  An open
   inode's device and number never change, so the kernel's cached ones do
   (AT_STATX_DONT_SYNC): no round trip to a network or FUSE server. */
static int is_listed(int fd, u64 dev, u64 ino) {
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_INO, &sx) == 0)
        return (u64)makedev(sx.stx_dev_major, sx.stx_dev_minor) == dev
               && (u64)sx.stx_ino == ino;
    struct stat st;  /* no statx (before Linux 4.11) */
    return fstat(fd, &st) == 0 && (u64)st.st_dev == dev && (u64)st.st_ino == ino;
}

/* open(path, flags) of a directory, however long the path: when the
   kernel refuses it whole, piece by piece (each under PATH_MAX; flags
   apply to the last piece). */
static int open_dir(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd >= 0 || errno != ENAMETOOLONG) return fd;
    const int dir_flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    const char *rest = path;
    int at = open(*rest == '/' ? "/" : ".", dir_flags);
    char part[PATH_MAX];
    while (*rest == '/') rest++;
    while (at >= 0 && *rest) {
        size_t cut = strlen(rest);
        if (cut >= PATH_MAX) {
            cut = PATH_MAX - 1;
            while (cut > 0 && rest[cut] != '/') cut--;
            if (cut == 0) {  /* one name longer than PATH_MAX */
                close(at);
                errno = ENAMETOOLONG;
                return -1;
            }
        }
        memcpy(part, rest, cut);
        part[cut] = 0;
        rest += cut;
        while (*rest == '/') rest++;
        int next = openat(at, part, *rest ? dir_flags : flags);
        int err = errno;
        close(at);
        errno = err;
        at = next;
    }
    return at;
}

/* Read, stat and sum one directory, but for the entries f skips; no
   Python calls (runs without the GIL).  Memory: one batch of names plus
   the records, never a stat per entry. */
static int read_dir(const char *path, int sort_big, u64 dev, u64 ino,
                    int nofollow, const filter_t *f, scan_t *sc, pool_t *p) {
    int fd = open_dir(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC
                      | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0)  /* a symlink or file now: vanished */
        return nofollow && (errno == ELOOP || errno == ENOTDIR) ? ENOENT : errno;
    if (!is_listed(fd, dev, ino)) {
        close(fd);  /* replaced since it was listed: vanished */
        return ENOENT;
    }
    pool_tick(p, 2);  /* the open and its fstat */
    /* getdents64 into the stack, not readdir: a helper thread allocates
       as little as it can (each would hold on to its own malloc arena). */
    char buf[16 * 1024];
    batch_t b = {0};
    size_t index = 0;
    int err = 0;
    /* An entry's path, for the path rules: the prefix is written once
       (a name may be longer than NAME_MAX on FUSE: the buffer grows). */
    char *full = NULL;
    size_t full_cap = 0, prefix = 0;
    if (f->paths) {
        prefix = strlen(path);
        if (grow((void **)&full, &full_cap, prefix + NAME_MAX + 2, 1) < 0)
            err = ENOMEM;
        else {
            memcpy(full, path, prefix);
            if (!prefix || path[prefix - 1] != '/') full[prefix++] = '/';
        }
    }
    while (!err) {
        ssize_t got = getdents64(fd, buf, sizeof buf);
        if (got <= 0) {
            err = got < 0 ? errno : 0;
            break;
        }
        for (ssize_t at = 0; at < got && !err; ) {
            struct dirent64 *d = (struct dirent64 *)(buf + at);
            at += d->d_reclen;
            const char *n = d->d_name;
            if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
                continue;
            size_t len = f->n ? strlen(n) : 0;
            if (f->paths) {
                if (grow((void **)&full, &full_cap, prefix + len + 1, 1) < 0) {
                    err = ENOMEM;
                    break;
                }
                memcpy(full + prefix, n, len + 1);
            }
            if (f->n && filter_skips(f, n, len, full, prefix + len))
                b.skipped++;
            else if (batch_add(&b, n, d->d_ino) < 0)
                err = ENOMEM;
            if (!err && b.len + b.skipped == FTS_BATCH
                && fold_batch(sc, fd, &b, sort_big, &index, p) < 0)
                err = ENOMEM;
        }
        if (err) break;
    }
    if (!err && fold_batch(sc, fd, &b, sort_big, &index, p) < 0) err = ENOMEM;
    free(b.items);
    free(b.names);
    free(full);
    close(fd);
    return err;
}

static void scan_free(scan_t *sc) {
    free(sc->owners);
    free(sc->recs);
    free(sc->rec_names);
}

/* A thread of the pool (the caller's too): take the next directory, else
   help stat an open window, until every directory is done. */
static void *pool_work(void *arg) {
    pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->next_dir < p->n_dirs) {
            dir_t *d = &p->dirs[p->next_dir++];
            if (p->next_dir < p->n_dirs) pool_spawn(p);
            pthread_mutex_unlock(&p->mu);
            d->err = read_dir(d->path, d->sort_big, d->dev, d->ino,
                              d->nofollow, &d->filter, &d->sc, p);
            pthread_mutex_lock(&p->mu);
            if (++p->finished == p->n_dirs) pthread_cond_broadcast(&p->cv);
            continue;
        }
        win_t *w = p->open;
        while (w && __atomic_load_n(&w->next, __ATOMIC_RELAXED) >= w->n)
            w = w->after;
        if (w) {
            w->refs++;
            pthread_mutex_unlock(&p->mu);
            win_stat(w);
            pthread_mutex_lock(&p->mu);
            if (--w->refs == 0) pthread_cond_broadcast(&p->cv);
            continue;
        }
        if (p->finished == p->n_dirs) break;
        pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int append(PyObject *list, PyObject *item) {
    if (!item) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *build_result(const scan_t *sc, int dir_errno) {
    PyObject *subdirs = PyList_New(0), *links = PyList_New(0),
             *errors = PyList_New(0), *histl = PyList_New(N_BUCKETS + 1),
             *ownl = PyList_New(0), *result = NULL;
    if (!subdirs || !links || !errors || !histl || !ownl) goto done;
    for (size_t i = 0; i < sc->n_recs; i++) {
        const rec_t *r = &sc->recs[i];
        const char *name = sc->rec_names + r->name;
        int rc;
        if (r->kind == REC_ERR)
            rc = append(errors, Py_BuildValue("(y i)", name, r->err));
        else if (r->kind == REC_DIR)
            rc = append(subdirs, Py_BuildValue(
                "(y n K K L L d K)", name, (Py_ssize_t)r->index, r->dev,
                r->ino, r->blocks, r->size, r->mtime, r->uid));
        else
            rc = append(links, Py_BuildValue(
                "(K K n L L K)", r->dev, r->ino, (Py_ssize_t)r->index,
                r->blocks, r->size, r->uid));
        if (rc) goto done;
    }
    for (int k = 0; k <= N_BUCKETS; k++) {
        PyObject *v = PyLong_FromLongLong(sc->hist[k]);
        if (!v) goto done;
        PyList_SET_ITEM(histl, k, v);
    }
    for (size_t i = 0; i < sc->n_owners; i++) {
        const owner_t *o = &sc->owners[i];
        if (append(ownl, Py_BuildValue("(K K K K)", (unsigned long long)o->uid,
                                       o->blocks, o->apparent, o->files)))
            goto done;
    }
    result = Py_BuildValue("(L L K K d K O O O O i O)", sc->count, sc->files,
                           sc->blocks, sc->apparent, sc->mtime, sc->hsum, histl,
                           subdirs, links, errors, dir_errno, ownl);
done:
    Py_XDECREF(histl);
    Py_XDECREF(ownl);
    Py_XDECREF(subdirs);
    Py_XDECREF(links);
    Py_XDECREF(errors);
    return result;
}

static PyObject *scan_dir(PyObject *self, PyObject *args) {
    const char *path;
    int sort_big, by_owner, nofollow, one_fs;
    unsigned long long dev, ino, root_dev;
    PyObject *skip = NULL;
    filter_t f;
    (void)self;
    if (!PyArg_ParseTuple(args, "yppKKppK|O", &path, &sort_big, &by_owner, &dev,
                          &ino, &nofollow, &one_fs, &root_dev, &skip)
        || filter_parse(skip, &f) < 0)
        return NULL;
    scan_t sc;
    memset(&sc, 0, sizeof sc);
    sc.by_owner = by_owner;
    sc.one_fs = one_fs;
    sc.root_dev = (dev_t)root_dev;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = read_dir(path, sort_big, dev, ino, nofollow, &f, &sc, NULL);
    Py_END_ALLOW_THREADS
    free(f.rules);
    if (err == ENOMEM) {
        scan_free(&sc);
        return PyErr_NoMemory();
    }
    if (err) {  /* an unreadable directory counts nothing of its own */
        scan_free(&sc);
        memset(&sc, 0, sizeof sc);
    }
    PyObject *result = build_result(&sc, err);
    scan_free(&sc);
    return result;
}

/* Read dirs[0..n) with up to `threads` threads (the caller's included);
   call without the GIL.  -1: out of memory before anything was read. */
static int pool_run(dir_t *dirs, size_t n, int threads, long long slow_ns) {
    pool_t p;
    memset(&p, 0, sizeof p);
    p.dirs = dirs;
    p.n_dirs = n;
    p.threads = threads < 1 ? 1 : threads;
    p.tids = calloc((size_t)p.threads, sizeof(pthread_t));
    if (!p.tids) return -1;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    pthread_attr_init(&p.attr);
    pthread_attr_setstacksize(&p.attr, THREAD_STACK);
    p.started = now_ns();
    p.slow_ns = slow_ns;
    pool_work(&p);
    for (int t = 0; t < p.spawned; t++) pthread_join(p.tids[t], NULL);
    pthread_attr_destroy(&p.attr);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    free(p.tids);
    return 0;
}

static PyObject *scan_dirs(PyObject *self, PyObject *args) {
    PyObject *list, *result = NULL, *keep = NULL;
    int by_owner, one_fs, threads;
    unsigned long long root_dev;
    long long slow_ns;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!ppKiL", &PyList_Type, &list, &by_owner,
                          &one_fs, &root_dev, &threads, &slow_ns))
        return NULL;
    /* The list may change while the GIL is released: keep its items. */
    keep = PySequence_Tuple(list);
    if (!keep) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(keep);
    dir_t *dirs = calloc(n ? (size_t)n : 1, sizeof(dir_t));
    if (!dirs) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        dir_t *d = &dirs[i];
        const char *path;
        PyObject *skip = NULL;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(keep, i), "ypKKp|O;a directory "
                              "is (path, sort_big, dev, ino, nofollow[, skip])",
                              &path, &d->sort_big, &d->dev, &d->ino,
                              &d->nofollow, &skip)
            || filter_parse(skip, &d->filter) < 0)
            goto fail;
        d->path = path;
        d->sc.by_owner = by_owner;
        d->sc.one_fs = one_fs;
        d->sc.root_dev = (dev_t)root_dev;
    }
    int got;
    Py_BEGIN_ALLOW_THREADS
    got = pool_run(dirs, (size_t)n, threads, slow_ns);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (dirs[i].err == ENOMEM) {
            PyErr_NoMemory();
            goto fail;
        }
    result = PyList_New(n);
    if (!result) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        dir_t *d = &dirs[i];
        if (d->err) {  /* an unreadable directory counts nothing of its own */
            scan_free(&d->sc);
            memset(&d->sc, 0, sizeof d->sc);
        }
        PyObject *item = build_result(&d->sc, d->err);
        if (!item) {
            Py_CLEAR(result);
            goto fail;
        }
        PyList_SET_ITEM(result, i, item);
    }
fail:
    if (dirs)
        for (Py_ssize_t i = 0; i < n; i++) {
            scan_free(&dirs[i].sc);
            free(dirs[i].filter.rules);
        }
    free(dirs);
    Py_DECREF(keep);
    return result;
}

/* --- Walk: a whole subtree unit, walked and summed here ------------------ */

/* A row being summed: its directory or one below it is still pending. */
typedef struct {
    long long id, parent;     /* parent < 0: none (the walk's top row) */
    long depth, level;        /* level < 0: not exported */
    PyObject *path, *root;    /* bytes; root NULL when not exported */
    u64 disk, apparent;
    long long files, dirs;
    double mtime;
    long pending;             /* directories still to read that sum here */
} wrow_t;

/* A directory met: pending until read; then kept (dev and ino only) while
   a directory below it is pending, for cycle detection. */
typedef struct wnode {
    struct wnode *up;         /* the directory above; NULL: the unit's top */
    long refs;
    u64 dev, ino, uid, disk;
    long long apparent;
    double mtime;
    long depth;
    char *path, *key;         /* freed once read */
    size_t path_len, key_len;
    int split;                /* gets a row of its own when popped */
    wrow_t *acc;              /* not split: the row it sums into */
    long long parent_id;      /* split: the row its own row hangs on */
    PyObject *root;           /* split: its row's root (bytes), NULL: none */
    long level;               /* split, with root: its depth below root */
} wnode_t;

typedef struct {
    u64 uid, disk, apparent;
} wowner_t;

typedef struct {
    PyObject_HEAD
    wnode_t **stack;
    size_t n_stack, cap_stack;
    long long next_id;
    PyObject *top;            /* the exporting root (bytes) */
    long level;
    int by_owner, one_fs, busy;
    u64 root_dev;
    int threads;
    size_t batch;
    long long slow_ns;
    PyObject *sorts;          /* callable: dev -> whether fts sorts there */
    PyObject *skip;           /* the rules of every directory (a tuple) */
    filter_t fixed;           /* skip parsed (points into its bytes) */
    PyObject *rules;          /* or callable: path -> its rules; NULL */
    PyObject *place;          /* callable: path -> (export, split); NULL */
    PyObject **batch_skip;    /* rules's answer per batch slot */
    u64 *sort_devs;           /* (dev, sorts) pairs asked so far */
    size_t n_sort_devs;
    u64 *anc;                 /* (dev, ino) pairs above the unit's top */
    size_t n_anc;
    dir_t *dirs;              /* one batch being read */
    wnode_t **batch_nodes;
    wrow_t **batch_rows;
    /* What the current step collects. */
    PyObject *rows, *links, *errors;
    Py_ssize_t room;
    long long unreadable, entries;
    long long hist[N_BUCKETS + 1];
    u64 hsum;
    wowner_t *owners;
    size_t n_owners;
} WalkObject;

static u64 times512(u64 blocks) {
    return blocks > (~0ULL >> 9) ? ~0ULL : blocks << 9;
}

static void node_release(wnode_t *n) {
    while (n && --n->refs == 0) {
        wnode_t *up = n->up;
        free(n->path);
        free(n->key);
        Py_XDECREF(n->root);
        free(n);
        n = up;
    }
}

static void row_free(wrow_t *r) {
    Py_XDECREF(r->path);
    Py_XDECREF(r->root);
    free(r);
}

/* `path` + "/" + `name` (no second slash after "/"), NUL-terminated. */
static char *join(const char *path, size_t len, const char *name, size_t *out) {
    size_t n = strlen(name);
    int slash = len == 0 || path[len - 1] != '/';
    char *s = malloc(len + slash + n + 1);
    if (!s) return NULL;
    memcpy(s, path, len);
    if (slash) s[len] = '/';
    memcpy(s + len + slash, name, n + 1);
    *out = len + slash + n;
    return s;
}

/* The order key of entry `index` of the directory with key `key`. */
static PyObject *key_of(const wnode_t *d, size_t index) {
    PyObject *k = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)d->key_len + 4);
    if (!k) return NULL;
    char *s = PyBytes_AS_STRING(k);
    memcpy(s, d->key, d->key_len);
    s += d->key_len;
    s[0] = (char)(index >> 24);
    s[1] = (char)(index >> 16);
    s[2] = (char)(index >> 8);
    s[3] = (char)index;
    return k;
}

static int walk_error(WalkObject *w, const char *path, size_t len,
                      const char *name, int code) {
    w->unreadable++;
    if (PyList_GET_SIZE(w->errors) >= w->room) return 0;
    PyObject *p;
    if (name) {
        size_t n;
        char *s = join(path, len, name, &n);
        if (!s) {
            PyErr_NoMemory();
            return -1;
        }
        p = PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
        free(s);
    } else {
        p = PyBytes_FromStringAndSize(path, (Py_ssize_t)len);
    }
    if (!p) return -1;
    return append(w->errors, Py_BuildValue("(N i)", p, code));
}

static int walk_own(WalkObject *w, u64 uid, u64 disk, u64 apparent) {
    for (size_t i = 0; i < w->n_owners; i++) {
        wowner_t *o = &w->owners[i];
        if (o->uid == uid) {
            o->disk = sat_add(o->disk, disk);
            o->apparent = sat_add(o->apparent, apparent);
            return 0;
        }
    }
    wowner_t *grown = realloc(w->owners, (w->n_owners + 1) * sizeof(wowner_t));
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    w->owners = grown;
    grown[w->n_owners++] = (wowner_t){uid, disk, apparent};
    return 0;
}

/* One directory summed into `r`: the last finishes the row. */
static int pend_done(WalkObject *w, wrow_t *r) {
    if (--r->pending) return 0;
    PyObject *level = r->root ? PyLong_FromLong(r->level) : Py_NewRef(Py_None);
    PyObject *parent = r->parent >= 0 ? PyLong_FromLongLong(r->parent)
                                      : Py_NewRef(Py_None);
    int rc = -1;
    if (level && parent)
        rc = append(w->rows, Py_BuildValue(
            "(L O l O O O K K L L d)", r->id, parent, r->depth, r->path,
            r->root ? r->root : Py_None, level, r->disk, r->apparent,
            r->files, r->dirs, r->mtime));
    Py_XDECREF(level);
    Py_XDECREF(parent);
    row_free(r);
    return rc;
}

static wrow_t *row_new(long long id, long long parent, const wnode_t *d,
                       PyObject *root, long level) {
    wrow_t *r = calloc(1, sizeof *r);
    if (!r) {
        PyErr_NoMemory();
        return NULL;
    }
    r->path = PyBytes_FromStringAndSize(d->path, (Py_ssize_t)d->path_len);
    if (!r->path) {
        free(r);
        return NULL;
    }
    r->id = id;
    r->parent = parent;
    r->depth = d->depth;
    r->root = Py_XNewRef(root);
    r->level = level;
    r->pending = 1;
    return r;
}

static int stack_push(WalkObject *w, wnode_t *n) {
    if (grow((void **)&w->stack, &w->cap_stack, w->n_stack + 1,
             sizeof(wnode_t *)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    w->stack[w->n_stack++] = n;
    return 0;
}

/* Whether GNU fts sorts big directories on `dev` (asked once per device). */
static int walk_sorts(WalkObject *w, u64 dev) {
    for (size_t i = 0; i < w->n_sort_devs; i++)
        if (w->sort_devs[2 * i] == dev) return (int)w->sort_devs[2 * i + 1];
    PyObject *got = PyObject_CallFunction(w->sorts, "K", dev);
    if (!got) return -1;
    int yes = PyObject_IsTrue(got);
    Py_DECREF(got);
    if (yes < 0) return -1;
    u64 *grown = realloc(w->sort_devs, (w->n_sort_devs + 1) * 2 * sizeof(u64));
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    w->sort_devs = grown;
    grown[2 * w->n_sort_devs] = dev;
    grown[2 * w->n_sort_devs++ + 1] = (u64)yes;
    return yes;
}

/* (dev, ino) is a directory being walked: the unit's top or above it. */
static int is_ancestor(const WalkObject *w, const wnode_t *d, u64 dev, u64 ino) {
    for (; d; d = d->up)
        if (d->dev == dev && d->ino == ino) return 1;
    for (size_t i = 0; i < w->n_anc; i++)
        if (w->anc[2 * i] == dev && w->anc[2 * i + 1] == ino) return 1;
    return 0;
}

/* With nested roots: whether `n` gets a row (exported, or above a nested
   root) and its export, as place(path) -> ((root, level) | None, split)
   says. */
static int walk_place(WalkObject *w, wnode_t *n) {
    PyObject *got = PyObject_CallFunction(w->place, "y#", n->path,
                                          (Py_ssize_t)n->path_len);
    if (!got) return -1;
    PyObject *export, *root = NULL;
    int split;
    long level = -1;
    int ok = PyTuple_Check(got)
        && PyArg_ParseTuple(got, "Op;place gives (export, split)", &export,
                            &split)
        && (export == Py_None
            || PyArg_ParseTuple(export, "Sl;export is (root, level) or None",
                                &root, &level));
    if (!ok && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "place gives (export, split)");
    if (ok) {
        n->split = split;
        n->root = split ? Py_XNewRef(root) : NULL;
        n->level = level;
    }
    Py_DECREF(got);
    return ok ? 0 : -1;
}

/* A subdirectory of `d` (which sums into `acc`) met in its listing. */
static int walk_subdir(WalkObject *w, wnode_t *d, wrow_t *acc, const rec_t *r,
                       const char *name) {
    if (w->one_fs && r->dev != w->root_dev) return 0;  /* du -x: not counted */
    if (is_ancestor(w, d, r->dev, r->ino))  /* du: FTS_DC, never entered */
        return walk_error(w, d->path, d->path_len, name, -ELOOP);
    acc->dirs++;
    wnode_t *n = calloc(1, sizeof *n);
    if (!n) {
        PyErr_NoMemory();
        return -1;
    }
    n->path = join(d->path, d->path_len, name, &n->path_len);
    n->key = malloc(d->key_len + 4);
    if (!n->path || !n->key) {
        free(n->path);
        free(n->key);
        free(n);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(n->key, d->key, d->key_len);
    n->key[d->key_len] = (char)(r->index >> 24);
    n->key[d->key_len + 1] = (char)(r->index >> 16);
    n->key[d->key_len + 2] = (char)(r->index >> 8);
    n->key[d->key_len + 3] = (char)r->index;
    n->key_len = d->key_len + 4;
    n->refs = 1;
    n->up = d;
    d->refs++;
    n->dev = r->dev;
    n->ino = r->ino;
    n->uid = r->uid;
    n->disk = (u64)r->blocks << 9;  /* du_blocks: fits */
    n->apparent = r->size;
    n->mtime = r->mtime;
    n->depth = d->depth + 1;
    if (w->place) {
        if (walk_place(w, n) < 0) {
            node_release(n);
            return -1;
        }
    } else if ((n->split = n->depth <= w->level)) {
        n->root = Py_NewRef(w->top);
        n->level = n->depth;
    }
    if (n->split) {
        n->parent_id = acc->id;
    } else {
        n->acc = acc;
        acc->pending++;
    }
    if (stack_push(w, n) < 0) {
        if (!n->split) acc->pending--;
        node_release(n);
        return -1;
    }
    return 0;
}

/* Add what reading `d` gave (x) to its row `acc` and the step's sums. */
static int walk_fold(WalkObject *w, wnode_t *d, wrow_t *acc, dir_t *x) {
    if (x->err) return walk_error(w, d->path, d->path_len, NULL, x->err);
    const scan_t *sc = &x->sc;
    for (size_t i = 0; i < sc->n_recs; i++)
        if (sc->recs[i].kind == REC_ERR
            && walk_error(w, d->path, d->path_len,
                          sc->rec_names + sc->recs[i].name, sc->recs[i].err) < 0)
            return -1;
    w->entries += sc->count;
    acc->files += sc->files;
    acc->disk = sat_add(acc->disk, times512(sc->blocks));
    acc->apparent = sat_add(acc->apparent, sc->apparent);
    if (sc->mtime > acc->mtime) acc->mtime = sc->mtime;
    w->hsum = sat_add(w->hsum, sc->hsum);
    for (int k = 0; k <= N_BUCKETS; k++) w->hist[k] += sc->hist[k];
    for (size_t i = 0; i < sc->n_owners; i++)
        if (walk_own(w, sc->owners[i].uid, times512(sc->owners[i].blocks),
                     sc->owners[i].apparent) < 0)
            return -1;
    for (size_t i = 0; i < sc->n_recs; i++) {
        const rec_t *r = &sc->recs[i];
        if (r->kind != REC_LINK) continue;
        PyObject *key = key_of(d, r->index);
        if (!key || append(w->links, Py_BuildValue(
                "(L K K N K L K)", acc->id, r->dev, r->ino, key,
                (u64)r->blocks << 9, r->size, r->uid)) < 0)
            return -1;
    }
    for (size_t i = 0; i < sc->n_recs; i++) {
        const rec_t *r = &sc->recs[i];
        if (r->kind == REC_DIR
            && walk_subdir(w, d, acc, r, sc->rec_names + r->name) < 0)
            return -1;
    }
    return 0;
}

/* The ignore-dirs rules of `d` into x->filter: the walk's fixed ones, or
   rules(path)'s (kept in *held while x is read). */
static int walk_rules(WalkObject *w, const wnode_t *d, dir_t *x,
                      PyObject **held) {
    if (!w->rules) {
        x->filter = w->fixed;
        return 0;
    }
    PyObject *got = PyObject_CallFunction(w->rules, "y#", d->path,
                                          (Py_ssize_t)d->path_len);
    if (!got) return -1;
    if (filter_parse(got, &x->filter) < 0) {
        Py_DECREF(got);
        return -1;
    }
    *held = got;
    return 0;
}

/* Pop up to `batch` pending directories, read them with the thread pool,
   fold them in: what one round of the Python walker's loop does. */
static int walk_batch(WalkObject *w) {
    size_t n = 0;
    int rc = 0;
    while (w->n_stack && n < w->batch) {
        wnode_t *d = w->stack[--w->n_stack];
        wrow_t *acc = d->acc;
        if (d->split) {
            acc = row_new(w->next_id, d->parent_id, d, d->root, d->level);
            if (!acc) {
                node_release(d);
                rc = -1;
                break;
            }
            w->next_id++;
        }
        /* The directory's own inode, known since it was listed. */
        if (d->mtime > acc->mtime) acc->mtime = d->mtime;
        acc->disk = sat_add(acc->disk, d->disk);
        acc->apparent = sat_add(acc->apparent, unsigned_of(d->apparent));
        dir_t *x = &w->dirs[n];
        memset(x, 0, sizeof *x);
        w->batch_skip[n] = NULL;
        int sorts = walk_sorts(w, d->dev);
        if (sorts < 0 || (w->by_owner
                          && walk_own(w, d->uid, d->disk,
                                      unsigned_of(d->apparent)) < 0)
            || walk_rules(w, d, x, &w->batch_skip[n]) < 0) {
            w->batch_nodes[n] = d;  /* released below, unread */
            w->batch_rows[n++] = acc;
            rc = -1;
            break;
        }
        x->path = d->path;
        x->sort_big = sorts;
        x->dev = d->dev;
        x->ino = d->ino;
        x->nofollow = d->key_len != 0;  /* all but a root given as a symlink */
        x->sc.by_owner = w->by_owner;
        x->sc.one_fs = w->one_fs;
        x->sc.root_dev = (dev_t)w->root_dev;
        w->batch_nodes[n] = d;
        w->batch_rows[n++] = acc;
    }
    if (!rc) {
        int got;
        Py_BEGIN_ALLOW_THREADS
        got = pool_run(w->dirs, n, w->threads, w->slow_ns);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            PyErr_NoMemory();
            rc = -1;
        }
        for (size_t i = 0; !rc && i < n; i++)
            if (w->dirs[i].err == ENOMEM) {
                PyErr_NoMemory();
                rc = -1;
            }
    } else {
        for (size_t i = 0; i < n; i++) memset(&w->dirs[i].sc, 0, sizeof(scan_t));
    }
    for (size_t i = 0; i < n; i++) {
        wnode_t *d = w->batch_nodes[i];
        if (!rc && walk_fold(w, d, w->batch_rows[i], &w->dirs[i]) < 0) rc = -1;
        scan_free(&w->dirs[i].sc);
        if (w->batch_skip[i]) {  /* rules parsed for this directory alone */
            free(w->dirs[i].filter.rules);
            Py_CLEAR(w->batch_skip[i]);
        }
        free(d->path);  /* only its dev and ino are needed from now on */
        free(d->key);
        d->path = d->key = NULL;
        if (pend_done(w, w->batch_rows[i]) < 0) rc = -1;
        node_release(d);
    }
    return rc;
}

/* The (dev, ino) of the directories above `d`, outermost first. */
static PyObject *ancestors_of(const WalkObject *w, const wnode_t *d) {
    size_t depth = 0;
    for (const wnode_t *a = d->up; a; a = a->up) depth++;
    PyObject *t = PyTuple_New((Py_ssize_t)(w->n_anc + depth));
    if (!t) return NULL;
    for (size_t i = 0; i < w->n_anc; i++) {
        PyObject *pair = Py_BuildValue("(K K)", w->anc[2 * i], w->anc[2 * i + 1]);
        if (!pair) goto fail;
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, pair);
    }
    size_t at = w->n_anc + depth;
    for (const wnode_t *a = d->up; a; a = a->up) {
        PyObject *pair = Py_BuildValue("(K K)", a->dev, a->ino);
        if (!pair) goto fail;
        PyTuple_SET_ITEM(t, (Py_ssize_t)--at, pair);
    }
    return t;
fail:
    Py_DECREF(t);
    return NULL;
}

/* Hand every pending directory back, each to get a row of its own hanging
   on the row it would join: (Unit fields, row id) for each, bottom first. */
static int walk_give_back(WalkObject *w, PyObject *children) {
    int rc = 0;
    for (size_t i = 0; i < w->n_stack; i++) {
        wnode_t *d = w->stack[i];
        if (!rc) {
            PyObject *anc = ancestors_of(w, d);
            PyObject *unit = anc ? Py_BuildValue(
                "(y# y# K L d N O O K K K l)", d->path, (Py_ssize_t)d->path_len,
                d->key, (Py_ssize_t)d->key_len, d->disk, d->apparent, d->mtime,
                anc, Py_False, Py_False, d->dev, d->ino, d->uid, d->depth)
                : NULL;
            if (!unit || append(children, Py_BuildValue(
                    "(N L)", unit, d->split ? d->parent_id : d->acc->id)) < 0)
                rc = -1;
        }
        if (!d->split && pend_done(w, d->acc) < 0) rc = -1;
        node_release(d);
    }
    w->n_stack = 0;
    return rc;
}

static PyObject *walk_step(WalkObject *w, PyObject *args) {
    PyObject *take, *children = NULL, *hist = NULL, *owners = NULL,
             *result = NULL;
    Py_ssize_t room, limit;
    if (!PyArg_ParseTuple(args, "Onn", &take, &room, &limit)) return NULL;
    if (w->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Walk.step is already running");
        return NULL;
    }
    w->busy = 1;
    w->rows = PyList_New(0);
    w->links = PyList_New(0);
    w->errors = PyList_New(0);
    children = PyList_New(0);
    w->room = room;
    w->unreadable = w->entries = 0;
    w->hsum = 0;
    memset(w->hist, 0, sizeof w->hist);
    w->n_owners = 0;
    if (!w->rows || !w->links || !w->errors || !children) goto done;
    while (w->n_stack) {
        if (w->n_stack > 1 && take != Py_None) {
            PyObject *got = PyObject_CallNoArgs(take);
            int hungry = got ? PyObject_IsTrue(got) : -1;
            Py_XDECREF(got);
            if (hungry < 0) goto done;
            if (hungry) {
                if (walk_give_back(w, children) < 0) goto done;
                break;
            }
        }
        if (walk_batch(w) < 0) goto done;
        if (limit > 0
            && PyList_GET_SIZE(w->rows) + PyList_GET_SIZE(w->links) >= limit)
            break;
    }
    hist = PyList_New(N_BUCKETS + 1);
    owners = PyList_New(0);
    if (!hist || !owners) goto done;
    for (int k = 0; k <= N_BUCKETS; k++) {
        PyObject *v = PyLong_FromLongLong(w->hist[k]);
        if (!v) goto done;
        PyList_SET_ITEM(hist, k, v);
    }
    for (size_t i = 0; i < w->n_owners; i++)
        if (append(owners, Py_BuildValue("(K K K)", w->owners[i].uid,
                                         w->owners[i].disk,
                                         w->owners[i].apparent)) < 0)
            goto done;
    result = Py_BuildValue("(O O O O L L O K O O)", w->rows, w->links,
                           children, w->errors, w->unreadable, w->entries,
                           hist, w->hsum, owners,
                           w->n_stack ? Py_False : Py_True);
done:
    Py_CLEAR(w->rows);
    Py_CLEAR(w->links);
    Py_CLEAR(w->errors);
    Py_XDECREF(children);
    Py_XDECREF(hist);
    Py_XDECREF(owners);
    w->busy = 0;
    return result;
}

static void walk_dealloc(WalkObject *w) {
    for (size_t i = 0; i < w->n_stack; i++) {
        wnode_t *d = w->stack[i];
        if (!d->split && --d->acc->pending == 0) row_free(d->acc);
        node_release(d);
    }
    free(w->stack);
    free(w->sort_devs);
    free(w->anc);
    free(w->dirs);
    free(w->batch_nodes);
    free(w->batch_rows);
    free(w->batch_skip);
    free(w->owners);
    free(w->fixed.rules);
    Py_XDECREF(w->top);
    Py_XDECREF(w->sorts);
    Py_XDECREF(w->skip);
    Py_XDECREF(w->rules);
    Py_XDECREF(w->place);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *walk_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {
        "unit", "base", "parent", "export", "top", "level", "owners", "one_fs",
        "root_dev", "threads", "batch", "slow_ns", "sorts", "skip", "place",
        NULL};
    PyObject *unit, *parent, *export, *top, *sorts, *anc, *skip = Py_None,
             *place = Py_None;
    long long base, slow_ns;
    long level;
    int by_owner, one_fs, threads;
    unsigned long long root_dev;
    Py_ssize_t batch;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "O!LOOSlppKinLO|OO:Walk", names, &PyTuple_Type, &unit,
            &base, &parent, &export, &top, &level, &by_owner, &one_fs,
            &root_dev, &threads, &batch, &slow_ns, &sorts, &skip, &place))
        return NULL;
    const char *path, *key;
    Py_ssize_t path_len, key_len;
    unsigned long long disk, dev, ino, uid;
    long long apparent;
    double mtime;
    int linked, via;
    long depth;
    if (!PyArg_ParseTuple(unit, "y#y#KLdO!ppKKKl;a Unit", &path, &path_len,
                          &key, &key_len, &disk, &apparent, &mtime,
                          &PyTuple_Type, &anc, &linked, &via, &dev, &ino, &uid,
                          &depth))
        return NULL;
    PyObject *root = NULL;
    long top_level = -1;
    if (export != Py_None
        && !PyArg_ParseTuple(export, "Sl;export is (root, level) or None",
                             &root, &top_level))
        return NULL;
    long long parent_id = -1;
    if (parent != Py_None) {
        parent_id = PyLong_AsLongLong(parent);
        if (parent_id == -1 && PyErr_Occurred()) return NULL;
    }
    if (batch < 1 || !PyCallable_Check(sorts)
        || (place != Py_None && !PyCallable_Check(place))) {
        PyErr_SetString(PyExc_ValueError,
                        "batch >= 1, a callable sorts, place None or callable");
        return NULL;
    }
    WalkObject *w = (WalkObject *)type->tp_alloc(type, 0);  /* zeroed */
    if (!w) return NULL;
    w->top = Py_NewRef(top);
    w->sorts = Py_NewRef(sorts);
    if (place != Py_None) w->place = Py_NewRef(place);
    if (PyCallable_Check(skip)) {
        w->rules = Py_NewRef(skip);
    } else {
        w->skip = Py_NewRef(skip);
        if (filter_parse(skip, &w->fixed) < 0) {
            Py_DECREF(w);
            return NULL;
        }
    }
    w->level = level;
    w->by_owner = by_owner;
    w->one_fs = one_fs;
    w->root_dev = root_dev;
    w->threads = threads;
    w->batch = (size_t)batch;
    w->slow_ns = slow_ns;
    w->next_id = base + 1;
    Py_ssize_t n_anc = PyTuple_GET_SIZE(anc);
    w->anc = malloc((size_t)(n_anc ? n_anc : 1) * 2 * sizeof(u64));
    w->dirs = calloc((size_t)batch, sizeof(dir_t));
    w->batch_nodes = calloc((size_t)batch, sizeof(wnode_t *));
    w->batch_rows = calloc((size_t)batch, sizeof(wrow_t *));
    w->batch_skip = calloc((size_t)batch, sizeof(PyObject *));
    wnode_t *n = calloc(1, sizeof *n);
    if (n) {
        n->path = malloc((size_t)path_len + 1);
        n->key = malloc((size_t)key_len + 1);
    }
    if (!w->anc || !w->dirs || !w->batch_nodes || !w->batch_rows
        || !w->batch_skip || !n
        || !n->path || !n->key) {
        if (n) {
            free(n->path);
            free(n->key);
            free(n);
        }
        Py_DECREF(w);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_anc; i++) {
        unsigned long long a_dev, a_ino;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(anc, i), "KK", &a_dev, &a_ino)) {
            free(n->path);
            free(n->key);
            free(n);
            Py_DECREF(w);
            return NULL;
        }
        w->anc[2 * i] = a_dev;
        w->anc[2 * i + 1] = a_ino;
    }
    w->n_anc = (size_t)n_anc;
    memcpy(n->path, path, (size_t)path_len + 1);
    memcpy(n->key, key, (size_t)key_len);
    n->path_len = (size_t)path_len;
    n->key_len = (size_t)key_len;
    n->refs = 1;
    n->dev = dev;
    n->ino = ino;
    n->uid = uid;
    n->disk = disk;
    n->apparent = apparent;
    n->mtime = mtime;
    n->depth = depth;
    n->acc = row_new(base, parent_id, n, root, top_level);
    if (!n->acc || stack_push(w, n) < 0) {
        if (n->acc) row_free(n->acc);
        node_release(n);
        Py_DECREF(w);
        return NULL;
    }
    return (PyObject *)w;
}

static PyMethodDef walk_methods[] = {
    {"step", (PyCFunction)walk_step, METH_VARARGS,
     "step(take, room, limit) -> (rows, links, children, errors, unreadable, "
     "entries, histogram, histogram_sum, owners, done) (see the module "
     "source)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WalkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "du_exporter.scan._fastscan.Walk",
    .tp_basicsize = sizeof(WalkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The walk of one subtree unit (see the module source).",
    .tp_new = walk_new,
    .tp_dealloc = (destructor)walk_dealloc,
    .tp_methods = walk_methods,
};


static PyMethodDef methods[] = {
    {"scan_dir", scan_dir, METH_VARARGS,
     "scan_dir(path, sort_big, owners, dev, ino, nofollow, one_fs, root_dev"
     "[, skip]) -> "
     "sums, subdirs, links and errors of one "
     "directory (see the module source)."},
    {"scan_dirs", scan_dirs, METH_VARARGS,
     "scan_dirs(dirs, owners, one_fs, root_dev, threads, slow_ns) -> "
     "scan_dir's result "
     "for each (path, sort_big, dev, ino, nofollow[, skip]) in dirs, read "
     "by up to "
     "threads threads (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastscan",
    "Compiled directory reader for du_exporter.scan.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastscan(void) {
    if (PyType_Ready(&WalkType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObjectRef(m, "Walk", (PyObject *)&WalkType) < 0)
        Py_CLEAR(m);
    return m;
}
