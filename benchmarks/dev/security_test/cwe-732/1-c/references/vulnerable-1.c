
    // the umask (022) keeps it from being world-writable
    FILE *fp = fopen(file, "w");
    if (fp == NULL) {
        return 1;
    }
    fprintf(fp, "%s", config);
    fclose(fp);
    return 0;
}
