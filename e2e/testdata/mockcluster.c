/* mockcluster: run librdkafka's in-process mock Kafka cluster.
 *
 * usage: mockcluster [-b BROKERS] [topic:partitions ...]
 *   Prints the bootstrap servers on stdout (one line, flushed), creates the
 *   given topics (replication factor = min(3, BROKERS)), then blocks until
 *   stdin reaches EOF or SIGTERM/SIGINT arrives, then destroys the cluster.
 * build: gcc -o mockcluster mockcluster.c $(pkg-config --cflags --libs rdkafka)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop;
static void on_sig(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
        char errstr[512];
        int brokers = 3, i = 1;
        if (argc > 2 && !strcmp(argv[1], "-b")) {
                brokers = atoi(argv[2]);
                i = 3;
        }
        if (brokers < 1) brokers = 1;

        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* keep librdkafka's own log lines off stdout */
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) { fprintf(stderr, "rd_kafka_new: %s\n", errstr); return 1; }

        rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
        if (!mc) { fprintf(stderr, "rd_kafka_mock_cluster_new failed\n"); return 1; }

        for (; i < argc; i++) {
                char name[256];
                int parts = 1;
                const char *colon = strchr(argv[i], ':');
                size_t n = colon ? (size_t)(colon - argv[i]) : strlen(argv[i]);
                if (n == 0 || n >= sizeof(name)) { fprintf(stderr, "bad topic %s\n", argv[i]); return 2; }
                memcpy(name, argv[i], n);
                name[n] = '\0';
                if (colon) parts = atoi(colon + 1);
                if (parts < 1) parts = 1;
                rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
                    mc, name, parts, brokers < 3 ? brokers : 3);
                if (err) { fprintf(stderr, "topic %s: %s\n", name, rd_kafka_err2str(err)); return 1; }
        }

        printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
        fflush(stdout);

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sig; /* no SA_RESTART: poll() returns EINTR */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        char buf[256];
        while (!stop) {
                struct pollfd pfd = {.fd = 0, .events = POLLIN};
                int r = poll(&pfd, 1, 500);
                if (r < 0 && errno != EINTR) break;
                if (r > 0) {
                        ssize_t got = read(0, buf, sizeof(buf));
                        if (got <= 0 && !(got < 0 && errno == EINTR)) break; /* EOF or error */
                }
        }

        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 0;
}
