/* tests/unit/raft/main.c: runs every raft/ test group. */
#include "tests/unit/raft/raft_tests.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

int main(void)
{
    int failed = 0;

    /* As in server/main.c: raft_uv writes to peers that may have gone away. */
    signal(SIGPIPE, SIG_IGN);
    /* CONCORD_TEST_FILTER=name_pattern runs only the matching tests. */
    if (getenv("CONCORD_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("CONCORD_TEST_FILTER"));

    failed += test_codec_run();
    failed += test_execute_run();
    failed += test_execute_control_run();
    failed += test_fsm_run();
    failed += test_fixture_run();
    failed += test_cluster_run();
    return failed == 0 ? 0 : 1;
}
