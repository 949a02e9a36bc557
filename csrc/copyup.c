/* Copy-up of a tmpfs mount point (the `tmpcopyup` mount option podman adds
 * to every tmpfs): the image's files under the mount point are copied into
 * the new, empty tmpfs, as runc and crun do.  The shim opens the mount
 * point's directory before mounting; that descriptor still reaches the
 * directory underneath, so the copy reads from it and writes into the
 * tmpfs.  Everything is relative to descriptors (*at calls, no symlink is
 * ever followed), and the depth is bounded. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "copyup.h"

#define COPYUP_MAX_DEPTH 64

/* The content of the regular file NAME: copy_file_range, or read/write
 * where the two file systems cannot do that. */
static int copy_file(int sdir, int ddir, const char *name, const struct stat *st)
{
    char buf[65536];
    int in, out, rc = -1;
    ssize_t n = 0;

    in = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return -1;
    out = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
        goto out_in;
    for (off_t left = st->st_size; left > 0; left -= n) {
        n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n == 0)
            break; /* the file shrank */
        if (n < 0)
            break;
    }
    if (n < 0 && errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        goto out_both;
    if (n < 0) {
        /* fall back from wherever copy_file_range stopped */
        if (lseek(in, 0, SEEK_SET) < 0 || lseek(out, 0, SEEK_SET) < 0 || ftruncate(out, 0) < 0)
            goto out_both;
        while ((n = read(in, buf, sizeof(buf))) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                goto out_both;
            for (ssize_t done = 0, w; done < n; done += w) {
                w = write(out, buf + done, (size_t)(n - done));
                if (w < 0 && errno == EINTR)
                    w = 0;
                else if (w < 0)
                    goto out_both;
            }
        }
    }
    rc = 0;
out_both:
    close(out);
out_in:
    close(in);
    return rc;
}

/* Owner, mode (set after the owner: chown clears setuid bits) and times of
 * the copy NAME in DDIR.  A symlink's mode cannot be set. */
static int copy_attrs(int ddir, const char *name, const struct stat *st)
{
    struct timespec times[2] = {st->st_atim, st->st_mtim};

    if (fchownat(ddir, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    if (!S_ISLNK(st->st_mode) && fchmodat(ddir, name, st->st_mode & 07777, 0) < 0)
        return -1;
    return utimensat(ddir, name, times, AT_SYMLINK_NOFOLLOW);
}

static int copy_dir(int sdir, int ddir, int depth);

static int copy_entry(int sdir, int ddir, const char *name, int depth)
{
    char target[PATH_MAX];
    struct stat st;
    ssize_t n;
    int s, d, rc;

    if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
        rc = copy_file(sdir, ddir, name, &st);
        break;
    case S_IFDIR:
        if (mkdirat(ddir, name, 0700) < 0)
            return -1;
        s = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s < 0)
            return -1;
        d = openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (d < 0) {
            close(s);
            return -1;
        }
        rc = copy_dir(s, d, depth + 1); /* closes both */
        break;
    case S_IFLNK:
        n = readlinkat(sdir, name, target, sizeof(target) - 1);
        if (n < 0)
            return -1;
        target[n] = '\0';
        rc = symlinkat(target, ddir, name);
        break;
    default: /* devices, fifos, sockets: recreated, as runc and crun do */
        rc = mknodat(ddir, name, st.st_mode & (S_IFMT | 0600), st.st_rdev);
        break;
    }
    if (rc < 0)
        return -1;
    return copy_attrs(ddir, name, &st);
}

/* Copy every entry of SDIR into DDIR; both descriptors are consumed. */
static int copy_dir(int sdir, int ddir, int depth)
{
    struct dirent *de;
    DIR *dir;
    int rc = 0;

    if (depth > COPYUP_MAX_DEPTH) {
        close(sdir);
        close(ddir);
        errno = ELOOP;
        return -1;
    }
    dir = fdopendir(sdir);
    if (dir == NULL) {
        close(sdir);
        close(ddir);
        return -1;
    }
    while (rc == 0) {
        errno = 0;
        de = readdir(dir);
        if (de == NULL) {
            rc = errno ? -1 : 0;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = copy_entry(dirfd(dir), ddir, de->d_name, depth);
    }
    {
        int saved = errno;
        closedir(dir);
        close(ddir);
        errno = saved;
    }
    return rc;
}

int copy_up(int src_dir, int dst_dir)
{
    return copy_dir(src_dir, dst_dir, 0);
}
