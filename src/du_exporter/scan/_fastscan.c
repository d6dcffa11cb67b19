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
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
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

/* Read, stat and sum one directory, but for the entries f skips; no
   Python calls (runs without the GIL).  Memory: one batch of names plus
   the records, never a stat per entry. */
static int read_dir(const char *path, int sort_big, u64 dev, u64 ino,
                    int nofollow, const filter_t *f, scan_t *sc, pool_t *p) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC
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
    pool_t p;
    memset(&p, 0, sizeof p);
    p.dirs = calloc(n ? (size_t)n : 1, sizeof(dir_t));
    p.threads = threads < 1 ? 1 : threads;
    p.tids = calloc((size_t)p.threads, sizeof(pthread_t));
    if (!p.dirs || !p.tids) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        dir_t *d = &p.dirs[i];
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
    p.n_dirs = (size_t)n;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    pthread_attr_init(&p.attr);
    pthread_attr_setstacksize(&p.attr, THREAD_STACK);
    p.started = now_ns();
    p.slow_ns = slow_ns;
    Py_BEGIN_ALLOW_THREADS
    pool_work(&p);
    for (int t = 0; t < p.spawned; t++) pthread_join(p.tids[t], NULL);
    Py_END_ALLOW_THREADS
    pthread_attr_destroy(&p.attr);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    for (size_t i = 0; i < p.n_dirs; i++)
        if (p.dirs[i].err == ENOMEM) {
            PyErr_NoMemory();
            goto fail;
        }
    result = PyList_New(n);
    if (!result) goto fail;
    for (size_t i = 0; i < p.n_dirs; i++) {
        dir_t *d = &p.dirs[i];
        if (d->err) {  /* an unreadable directory counts nothing of its own */
            int keep_owner = d->sc.by_owner, keep_one = d->sc.one_fs;
            scan_free(&d->sc);
            memset(&d->sc, 0, sizeof d->sc);
            d->sc.by_owner = keep_owner;
            d->sc.one_fs = keep_one;
        }
        PyObject *item = build_result(&d->sc, d->err);
        if (!item) {
            Py_CLEAR(result);
            goto fail;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, item);
    }
fail:
    if (p.dirs)
        for (Py_ssize_t i = 0; i < n; i++) {
            scan_free(&p.dirs[i].sc);
            free(p.dirs[i].filter.rules);
        }
    free(p.dirs);
    free(p.tids);
    Py_DECREF(keep);
    return result;
}

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

PyMODINIT_FUNC PyInit__fastscan(void) { return PyModule_Create(&module); }
