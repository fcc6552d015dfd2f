// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+) needs _GNU_SOURCE, which Swift's Glibc module does
// not define: this one function is the agent's only C. Elsewhere it does nothing (macOS: development only).
#ifndef CALLOTSPAWN_H
#define CALLOTSPAWN_H
#include <spawn.h>

/// Closes every descriptor from `from` up in the child.
int allot_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

#endif
