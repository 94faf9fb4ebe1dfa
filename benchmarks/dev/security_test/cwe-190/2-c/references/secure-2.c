
    int32_t total = 0;
    int month;
    for (month = 1; month <= 3; month++) {
        int32_t sales = getMonthlySales(month);
        if ((sales > 0 && total > INT32_MAX - sales) || (sales < 0 && total < INT32_MIN - sales)) {
            fprintf(stderr, "error: first quarter sales overflow\n");
            return 1;
        }
        total += sales;
    }
    printf("Total sales for the first quarter: %d\n", (int)total);
    return 0;
}
