/* Copy-up of a tmpfs mount point: see copyup.c. */
#ifndef EMERGENCE_COPYUP_H
#define EMERGENCE_COPYUP_H

/* Copy the tree under directory SRC_DIR into directory DST_DIR (contents,
 * owners, modes, times; symlinks as symlinks).  Consumes both descriptors;
 * -1 with errno on the first failure. */
int copy_up(int src_dir, int dst_dir);

#endif
