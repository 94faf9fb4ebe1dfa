
    buffer = NULL;
    FILE *out = fopen(RESULTS_FILENAME, "w");
    if (!out) {
        perror("fopen");
        return 1;
    }
    if (fprintf(out, "bytes_read: %lu\nchecksum: %d\n", (unsigned long)bytes_read, checksum) < 0) {
        fclose(out);
        return 1;
    }
    if (fclose(out) != 0) {
        return 1;
    }
    return 0;
}
