/* tests/unit/storage/main.c: runs every storage test group. */
#include "tests/unit/storage/storage_tests.h"

int main(void)
{
    int failed = 0;

    failed += test_store_run();
    failed += test_records_run();
    failed += test_dump_run();
    failed += test_secret_run();
    return failed == 0 ? 0 : 1;
}
