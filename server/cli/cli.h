/* server/cli/cli.h: the `concord` command line for operators: users, nodes,
 * pre-auth keys, API keys, policy, cluster and audit commands, which talk to
 * a replica's admin API over its local Unix socket (default) or over HTTP
 * with an API key. `serve`, `version`, `generate`, `config check` and
 * `cluster init` belong to server/main.c, which hands everything else here. */
#ifndef CONCORD_SERVER_CLI_CLI_H
#define CONCORD_SERVER_CLI_CLI_H

/* Runs one command line (argv[0] is the program name). Returns the process
 * exit status: 0 success, 1 failure (the server's message is on stderr),
 * 2 usage error (the command's usage is on stderr). */
int cli_main(int argc, char **argv);

#endif
