
    FILE *results = fopen(RESULTS_FILENAME, "w");
    if (results == NULL) {
        printf("Error opening file: %s\n", RESULTS_FILENAME);
        exit(1);
    }
    fprintf(results, "%zu %d\n", bytes_read, checksum);
    fclose(results);
    return 0;
}
