/*
 * _fastscan: read one directory and lstat every entry, like GNU du.
 *
 * The optional compiled half of du_exporter.scan (which falls back to
 * os.scandir when this module is not built).  One call reads one
 * directory with the GIL released: readdir, then fstatat(dirfd, name,
 * AT_SYMLINK_NOFOLLOW) per entry.  Plain files are summed here; only
 * subdirectories, inodes with more than one link and errors come back as
 * Python objects, so the Python cost per file is zero.
 *
 * scan_dir(path: bytes, sort_big: bool) -> tuple:
 *   (entries, files, blocks, apparent, mtime, hist_sum, hist,
 *    subdirs, links, errors, dir_errno, owners)
 * where
 *   blocks    sum of st_blocks (512-byte units) of counted non-directories
 *   hist      list of counts per SIZE_BUCKETS bound (apparent size of
 *             regular files), last = larger than every bound
 *   subdirs   [(name, index, dev, ino, st_blocks, st_size, mtime, uid)]
 *   links     [(dev, ino, index, st_blocks, st_size, uid)] for nlink > 1
 *   owners    [(uid, blocks, apparent, files)]: the counted
 *             non-directories (not the links) summed per owner
 *   errors    [(name, errno)] for entries that could not be stat'ed
 *   dir_errno errno of opening or reading the directory, else 0
 * index is the entry's position in the listing (after the inode sort
 * GNU fts applies to each batch of 100,000 entries read that holds more
 * than 10,000, done here when sort_big is true).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_BUCKETS 13          /* 1 KiB * 4**k, k = 0..12 */
#define FTS_SORT_THRESHOLD 10000
#define FTS_BATCH 100000

typedef struct {
    size_t name;              /* offset into the name buffer */
    ino_t d_ino;
    int err;
    struct stat st;
} entry_t;

typedef struct {
    entry_t *items;
    size_t len, cap;
    char *names;
    size_t names_len, names_cap;
} listing_t;

static void listing_free(listing_t *l) {
    free(l->items);
    free(l->names);
}

static int listing_add(listing_t *l, const char *name, ino_t ino) {
    size_t n = strlen(name) + 1;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        entry_t *items = realloc(l->items, cap * sizeof(entry_t));
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    if (l->names_len + n > l->names_cap) {
        size_t cap = l->names_cap ? l->names_cap * 2 : 4096;
        while (cap < l->names_len + n) cap *= 2;
        char *names = realloc(l->names, cap);
        if (!names) return -1;
        l->names = names;
        l->names_cap = cap;
    }
    memcpy(l->names + l->names_len, name, n);
    l->items[l->len].name = l->names_len;
    l->items[l->len].d_ino = ino;
    l->items[l->len].err = 0;
    l->names_len += n;
    l->len++;
    return 0;
}

static int by_inode(const void *a, const void *b) {
    ino_t x = ((const entry_t *)a)->d_ino, y = ((const entry_t *)b)->d_ino;
    return (x > y) - (x < y);
}

/* Read and stat everything; no Python calls (runs without the GIL). */
static int read_dir(const char *path, int sort_big, listing_t *l) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return e;
    }
    int err = 0;
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (!d) {
            err = errno;
            break;
        }
        const char *n = d->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        if (listing_add(l, n, d->d_ino) < 0) {
            err = ENOMEM;
            break;
        }
    }
    if (!err) {
        /* GNU fts reads 100,000 entries at a time and sorts each batch
           of more than 10,000 by inode (on most filesystems). */
        for (size_t start = 0; sort_big && start < l->len; start += FTS_BATCH) {
            size_t n = l->len - start < FTS_BATCH ? l->len - start : FTS_BATCH;
            if (n > FTS_SORT_THRESHOLD)
                qsort(l->items + start, n, sizeof(entry_t), by_inode);
        }
        int dfd = dirfd(dir);
        for (size_t i = 0; i < l->len; i++) {
            entry_t *e = &l->items[i];
            if (fstatat(dfd, l->names + e->name, &e->st, AT_SYMLINK_NOFOLLOW))
                e->err = errno;
        }
    }
    closedir(dir);
    return err;
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

/* Sums per owner: a directory rarely holds more than a few owners. */
typedef struct {
    uid_t uid;
    long long blocks, apparent, files;
} owner_t;

static int owner_add(owner_t **owners, size_t *n, const struct stat *st) {
    for (size_t i = 0; i < *n; i++) {
        if ((*owners)[i].uid == st->st_uid) {
            (*owners)[i].blocks += st->st_blocks;
            (*owners)[i].apparent += st->st_size;
            (*owners)[i].files++;
            return 0;
        }
    }
    owner_t *grown = realloc(*owners, (*n + 1) * sizeof(owner_t));
    if (!grown) return -1;
    *owners = grown;
    grown[*n] = (owner_t){st->st_uid, st->st_blocks, st->st_size, 1};
    (*n)++;
    return 0;
}

static PyObject *owner_list(const owner_t *owners, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue(
            "(K L L L)", (unsigned long long)owners[i].uid, owners[i].blocks,
            owners[i].apparent, owners[i].files);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *build_result(listing_t *l, int dir_errno) {
    long long files = 0, count = 0, blocks = 0, apparent = 0, hsum = 0;
    long long hist[N_BUCKETS + 1] = {0};
    double mtime = 0.0;
    owner_t *owners = NULL;
    size_t n_owners = 0;
    PyObject *subdirs = PyList_New(0), *links = PyList_New(0),
             *errors = PyList_New(0), *histl = NULL, *ownl = NULL,
             *result = NULL;
    if (!subdirs || !links || !errors) goto done;
    for (size_t i = 0; i < l->len; i++) {
        entry_t *e = &l->items[i];
        const char *name = l->names + e->name;
        PyObject *item;
        int rc;
        if (e->err) {
            item = Py_BuildValue("(y i)", name, e->err);
            if (!item) goto done;
            rc = PyList_Append(errors, item);
            Py_DECREF(item);
            if (rc) goto done;
            continue;
        }
        const struct stat *st = &e->st;
        count++;
        if (S_ISDIR(st->st_mode)) {
            item = Py_BuildValue(
                "(y n K K L L d K)", name, (Py_ssize_t)i,
                (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
                (long long)st->st_blocks, (long long)st->st_size, mtime_of(st),
                (unsigned long long)st->st_uid);
            if (!item) goto done;
            rc = PyList_Append(subdirs, item);
            Py_DECREF(item);
            if (rc) goto done;
            continue;
        }
        files++;
        double m = mtime_of(st);
        if (m > mtime) mtime = m;
        if (st->st_nlink > 1) {
            item = Py_BuildValue(
                "(K K n L L K)", (unsigned long long)st->st_dev,
                (unsigned long long)st->st_ino, (Py_ssize_t)i,
                (long long)st->st_blocks, (long long)st->st_size,
                (unsigned long long)st->st_uid);
            if (!item) goto done;
            rc = PyList_Append(links, item);
            Py_DECREF(item);
            if (rc) goto done;
        } else {
            blocks += st->st_blocks;
            apparent += st->st_size;
            if (owner_add(&owners, &n_owners, st) < 0) {
                PyErr_NoMemory();
                goto done;
            }
        }
        if (S_ISREG(st->st_mode)) {
            hist[bucket_of(st->st_size)]++;
            hsum += st->st_size;
        }
    }
    histl = PyList_New(N_BUCKETS + 1);
    if (!histl) goto done;
    for (int k = 0; k <= N_BUCKETS; k++) {
        PyObject *v = PyLong_FromLongLong(hist[k]);
        if (!v) goto done;
        PyList_SET_ITEM(histl, k, v);
    }
    ownl = owner_list(owners, n_owners);
    if (!ownl) goto done;
    result = Py_BuildValue("(L L L L d L O O O O i O)", count, files, blocks,
                           apparent, mtime, hsum, histl, subdirs, links,
                           errors, dir_errno, ownl);
done:
    free(owners);
    Py_XDECREF(ownl);
    Py_XDECREF(histl);
    Py_XDECREF(subdirs);
    Py_XDECREF(links);
    Py_XDECREF(errors);
    return result;
}

static PyObject *scan_dir(PyObject *self, PyObject *args) {
    const char *path;
    int sort_big;
    (void)self;
    if (!PyArg_ParseTuple(args, "yp", &path, &sort_big)) return NULL;
    listing_t l = {0};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = read_dir(path, sort_big, &l);
    Py_END_ALLOW_THREADS
    if (err == ENOMEM) {
        listing_free(&l);
        return PyErr_NoMemory();
    }
    if (err) l.len = 0;  /* an unreadable directory lists nothing */
    PyObject *result = build_result(&l, err);
    listing_free(&l);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_dir", scan_dir, METH_VARARGS,
     "scan_dir(path, sort_big) -> sums, subdirs, links and errors of one "
     "directory (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastscan",
    "Compiled directory reader for du_exporter.scan.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastscan(void) { return PyModule_Create(&module); }
