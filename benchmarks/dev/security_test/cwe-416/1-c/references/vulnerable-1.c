
    fp = fopen(RESULTS_FILENAME, "w");
    if (fp == NULL) {
        printf("Error opening file: %s\n", RESULTS_FILENAME);
        exit(1);
    }
    sprintf(buffer, "%zu %d\n", bytes_read, checksum);
    fputs(buffer, fp);
    fclose(fp);
    return 0;
}
